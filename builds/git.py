"""git: the argument lists and environment of a build's checkout, and how a team's git login reaches git.

Nothing here runs anything: a `builds.runner` runner does, locally or over SSH. Every git command of a build
- reads no configuration of the builder's (GIT_CONFIG_NOSYSTEM, GIT_CONFIG_GLOBAL=/dev/null), so no credential helper,
  URL rewrite, proxy or template directory of the worker's applies to a developer's repository;
- never prompts (GIT_TERMINAL_PROMPT=0), and gets a login only through GIT_ASKPASS: a script that prints the team's git
  login from two 0600 files next to it in the build's work directory (never a command line, never the URL), or
  `true` (nothing) when the team has none for that host;
- follows no HTTP redirect (http.followRedirects=false): the egress policy checked this host, not another;
- for http(s), connects to the addresses the egress policy checked (http.curloptResolve), so a name that resolves
  elsewhere a moment later is not followed there.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from django.conf import settings

# git asks "Username for 'https://host': " then "Password for 'https://user@host': ". An empty user-name file means
# the host takes the token as the user name (https://TOKEN@host), with an empty password.
ASKPASS_SCRIPT = """#!/bin/sh
d=$(dirname "$0")
case "$1" in
  Username*) if [ -s "$d/username" ]; then cat "$d/username"; else cat "$d/token"; fi ;;
  *) if [ -s "$d/username" ]; then cat "$d/token"; fi ;;
esac
"""
ASKPASS_NAME, USERNAME_NAME, TOKEN_NAME = "askpass", "username", "token"
HARDENED = ["-c", "http.followRedirects=false"]


def environment(askpass: str = "true") -> dict[str, str]:
    return {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": askpass, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null"}


def curl_resolve(url: str, addresses) -> list[str]:
    """`-c http.curloptResolve=HOST:PORT:ADDR,...` pinning an http(s) URL's host to the checked addresses ([] for
    other schemes, an address literal, or no addresses)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not addresses or not parts.hostname:
        return []
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
        return []  # an address already
    except ValueError:
        pass
    port = parts.port or (443 if scheme == "https" else 80)
    pinned = ",".join(f"[{a}]" if a.version == 6 else str(a) for a in addresses)
    return ["-c", f"http.curloptResolve={host}:{port}:{pinned}"]


def init_args(directory: str) -> list[str]:
    return ["git", "init", "-q", directory]


def fetch_args(directory: str, url: str, ref: str, *, pins: list[str]) -> list[str]:
    return ["git", *HARDENED, *pins, "-C", directory, "fetch", "-q", "--depth=1", "--", url, ref or "HEAD"]


def checkout_args(directory: str) -> list[str]:
    return ["git", "-C", directory, "checkout", "-q", "FETCH_HEAD"]


def head_args(directory: str) -> list[str]:
    return ["git", "-C", directory, "rev-parse", "HEAD"]


def validate_git_url(url: str) -> str | None:
    """None if the URL may be cloned by a worker, else why not. A URL with a password or token in it is refused: it
    would be shown to the whole team and echoed into build logs and image labels."""
    if not url:
        return "Give the repository's URL."
    if url.startswith("-") or any(c.isspace() for c in url) or len(url) > 500:
        return "That is not a repository URL."
    allowed = settings.BUILD_GIT_URL_SCHEMES
    scheme = url.split("://", 1)[0].lower() if "://" in url else ("ssh" if re.match(r"^[\w.-]+@[\w.-]+:", url) else "")
    if scheme not in allowed:
        return f"Use a {', '.join(s + '://' for s in allowed)} URL" + (" (or user@host:path)" if "ssh" in allowed else "") + "."
    if "://" in url:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return "That is not a repository URL."
        if parts.password is not None or (parts.username is not None and scheme != "ssh"):
            host = git_credential_host(url.replace(parts.netloc, parts.netloc.rsplit("@", 1)[1], 1)) or parts.hostname
            return (f"Take the user name and token out of the URL: save them as a git login for {host} on the team's "
                    "build integrations page, and every build from that host uses it. (A URL is shown to the whole "
                    "team and written into build logs and image labels.)")
    return None


def git_credential_host(url: str) -> str:
    """The key of the git login that applies to an http(s) URL: its host, with the port when it is not the scheme's
    default ("" for other schemes)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return ""
    default = 443 if parts.scheme.lower() == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}" if port and port != default else host
