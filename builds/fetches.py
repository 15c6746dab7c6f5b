"""What a build fetches over the network, and the egress policy's verdict on each (`portal.egress`).

A build reaches: the registry its image is pushed to, the base images of its FROM lines, the images COPY --from and
RUN --mount=...,from= read, the URLs of ADD (buildah downloads them itself, on the builder's network), and the git
remote of its context. podman, buildah and git resolve names themselves, so the policy is checked when a definition or
revision is saved (a form error at once) and again on the worker just before the build (docs/security.md#egress names
what remains between that check and the tools' own lookups).

The portal's own registry (REGISTRY_URL) is shared by every team, and the builders hold one login to it that can read
and write everything. So inside it a team reaches only its own namespace, `REGISTRY_URL/<team slug>/`: a build pushes
there and nowhere else in it, and its FROM, COPY --from and RUN --mount images come from there or from a namespace
listed in REGISTRY_SHARED_NAMESPACES (base images a platform team publishes for everyone). Another team's images are
neither overwritten nor read through the builders' login.

Each function returns sentences for a person (empty when everything is allowed).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from django.conf import settings

from portal import egress

from .containerfile import Parsed, ParseError, arg_pairs, expand, parse, split_words, unquote

URL_SOURCE_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[^@/\s]+@[^:/\s]+:)", re.IGNORECASE)


@dataclass
class RemoteSource:
    """Something the builder fetches over the network: an image (`kind` "image") or a URL ("url")."""

    line: int
    instruction: str  # "FROM", "COPY --from", "RUN --mount", "ADD"
    kind: str
    reference: str


def remote_sources(parsed: Parsed, build_args: dict[str, str] | None = None) -> list[RemoteSource]:
    """Every base image, image named by COPY --from or RUN --mount=...,from=, and ADD URL of a parsed Containerfile,
    with build args and ARG defaults expanded as the builder expands them. Stage names, stage numbers and scratch are
    not fetched and are left out."""
    build_args = build_args or {}
    values: dict[str, str | None] = {}
    for ins in parsed.global_args:
        for name, default in arg_pairs(ins.args):
            values[name] = build_args.get(name, default)
    names: set[str] = set()
    found = []

    def image(ref, line, instruction):
        ref = ref.strip()
        if ref and ref.lower() != "scratch" and ref.lower() not in names and not ref.isdigit():
            found.append(RemoteSource(line, instruction, "image", ref))

    for stage in parsed.stages:
        image(expand(stage.base, {**values, **build_args}), stage.line, "FROM")
        local = dict(values)
        for ins in stage.instructions[1:]:
            flags, rest = ins.flags_and_rest()
            if ins.keyword == "ARG":
                for name, default in arg_pairs(ins.args):
                    local[name] = build_args.get(name, default if default is not None else local.get(name))
            elif ins.keyword == "COPY":
                for value in flags.get("from", []):
                    image(expand(unquote(value), local), ins.line, "COPY --from")
            elif ins.keyword == "RUN":
                for mount in flags.get("mount", []):
                    options = dict(part.partition("=")[::2] for part in unquote(mount).split(","))
                    if options.get("from"):
                        image(expand(options["from"], local), ins.line, "RUN --mount")
            elif ins.keyword == "ADD" and not ins.heredocs:
                words = [unquote(w) for w in split_words(rest)]
                for word in words[:-1]:
                    source = expand(word, local)
                    if URL_SOURCE_RE.match(source):
                        found.append(RemoteSource(ins.line, "ADD", "url", source))
        if stage.name:
            names.add(stage.name)
    return found



def containerfile_refusals(text: str, build_args: dict[str, str] | None = None, *, team) -> list[str]:
    """`line N: ...` for every FROM, COPY --from, RUN --mount or ADD source the policy refuses, and every image in
    another team's part of the portal's registry."""
    try:
        parsed = parse(text)
    except ParseError:
        return []  # validation reports it
    refusals = []
    for source in remote_sources(parsed, build_args):
        what = f"line {source.line}: {source.instruction} {source.reference}"
        try:
            if source.kind == "image":
                egress.check_image(source.reference, what=what)
            else:
                egress.check_url(source.reference, what=what)
        except egress.EgressRefused as exc:
            refusals.append(str(exc))
            continue
        if source.kind == "image":
            refusals.append(namespace_refusal(source.reference, team, what=what, write=False))
    return [refusal for refusal in refusals if refusal]


def repository_refusal(repository: str, team, *, write: bool = True) -> str:
    """Why `repository` (registry/path) may not be pushed to (or, with write=False, read) for `team`, or ""."""
    try:
        egress.check_image(repository, what=f"The registry of {repository}")
    except egress.EgressRefused as exc:
        return str(exc)
    return namespace_refusal(repository, team, what=f"The repository {repository}", write=write)


def namespace_refusal(reference: str, team, *, what: str, write: bool) -> str:
    """Why `team` may not push to (write) or read `reference` in the portal's own registry, or "" (also for any
    other registry: those are reached with the team's own credentials)."""
    path = portal_registry_path(reference)
    if path is None:
        return ""
    namespace = path.split("/", 1)[0]
    if namespace == team.slug or (not write and namespace in settings.REGISTRY_SHARED_NAMESPACES):
        return ""
    own = f"{settings.REGISTRY_URL}/{team.slug}/"
    if write:
        return (f"{what} is outside {team.slug}'s part of the portal's registry: {team.slug} pushes only to "
                f"repositories under {own}")
    shared = ", ".join(f"{settings.REGISTRY_URL}/{name}/" for name in settings.REGISTRY_SHARED_NAMESPACES)
    return (f"{what} is in another team's part of the portal's registry ({settings.REGISTRY_URL}/{namespace}/): "
            f"{team.slug}'s builds read images of the portal's registry only under {own}"
            + (f" and the shared {shared}" if shared else "")
            + ". Ask that team to publish it in a shared namespace (REGISTRY_SHARED_NAMESPACES), or build it here.")


def portal_registry_path(reference: str) -> str | None:
    """The repository path (`team/name`, without tag or digest) of an image reference in the portal's own registry,
    or None when it names another registry or podman's local storage. The registry counts as the same under another
    name for the same address and port (127.0.0.1:5000 and localhost:5000)."""
    found = egress.registry_host(reference)
    own = egress.registry_host(f"{settings.REGISTRY_URL}/x")
    if found is None or own is None or found[1] != own[1]:
        return None
    if found[0].lower() != own[0].lower() and not (_addresses(found) & _addresses(own)):
        return None
    path = reference.split("/", 1)[1].split("@", 1)[0]
    name, _, tag = path.rpartition(":")
    return (name if name and "/" not in tag else path).lower()


def _addresses(host_port) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host_port[0].strip("[]"), host_port[1])}
    except (OSError, UnicodeError):
        return set()


def git_refusal(url: str) -> str:
    """Why the git remote `url` may not be reached, or "" (file:// URLs name no host: BUILD_GIT_URL_SCHEMES governs
    them)."""
    try:
        egress.check_url(url, what="The repository URL")
    except egress.EgressRefused as exc:
        return str(exc)
    return ""
