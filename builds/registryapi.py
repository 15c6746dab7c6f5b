"""Reading a registry over its HTTP API (the OCI distribution API): manifests by tag or digest, and a repository's tags.

Image retention reads every image's manifest (for the bytes a dry run frees) and each stage tag. Through `skopeo
inspect` that was a process per manifest, some 120 for one definition's dry run; here it is one kept-open connection
pool per plan (`session`). Copies and deletes stay with skopeo (`builds.registry`), which signs, preserves digests
and knows each registry's delete quirks.

A registry is reached as skopeo (containers/image) reaches it with the same `RegistryAccess`:
- TLS is verified against the system's CAs plus the registry's certs.d directory (/etc/containers/certs.d/HOST[:PORT],
  and /etc/docker/certs.d/HOST[:PORT]: *.crt are CAs, a *.cert with its *.key is a client certificate);
- an insecure registry (a credential marked insecure, or REGISTRY_INSECURE for the portal's own) is tried over HTTPS
  without verifying and then over plain HTTP, as `--tls-verify=false` does;
- the login answers the registry's challenge: Basic (distribution with htpasswd), or a Bearer token fetched from the
  realm the challenge names (Quay, Harbor, Docker Hub), anonymously when there is no login.

The registry and the token service its challenge names are both held to the egress policy (`portal.egress`) before
the first request: the challenge is the registry's to write, and a registry that a developer typed, or one taken over,
would otherwise have the worker fetch any address inside the portal's network, and learn from the error whether it
answered. A registry reached over HTTPS does not get its login sent to a token service over plain HTTP, and the
reader follows no redirect: manifests and tag lists are served by the registry itself.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import glob
import json
import os
import re
import ssl
import threading
import urllib.parse
import warnings

import urllib3

from portal import egress

TIMEOUT = urllib3.Timeout(connect=10, read=30)
# urllib3 warns on every request it sends without verifying the certificate. This module is the portal's only reader
# that does, and only for a registry whose team credential says insecure (shown "not verified" on the team's
# integrations page); the warning would fill the worker's log, once for each of retention's manifest reads.
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
CERTS_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
CONNECTIONS = 8  # per registry: retention reads manifests from 8 threads
CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
# Docker Hub's name in image references is not where its API answers (containers/image maps it the same way).
API_HOSTS = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}


class APIError(Exception):
    """The registry did not answer as asked; the message says what it said, in words."""


class NotFound(APIError):
    """The registry answered 404: no such manifest (or repository)."""


class Session:
    """One registry, read with one access (login, TLS), over connections kept open until `close`. Thread-safe."""

    def __init__(self, access, *, certs_dirs=CERTS_DIRS):
        self.access = access
        self.registry = access.registry
        self.host = API_HOSTS.get(self.registry, self.registry)  # where its API answers
        context = ssl.create_default_context()
        if access.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._unusable = None  # said on the first read, so opening a plan's session never fails by itself
        try:
            for directory in () if access.insecure else certs_dirs:
                self._load_certs_d(context, os.path.join(directory, self.registry))
        except (OSError, ssl.SSLError) as exc:
            self._unusable = APIError(f"the certificates for {self.registry} in {', '.join(certs_dirs)} cannot be "
                                      f"used: {exc}")
        self.pool = urllib3.PoolManager(ssl_context=context, maxsize=CONNECTIONS, retries=False, timeout=TIMEOUT,
                                        cert_reqs=ssl.CERT_NONE if access.insecure else ssl.CERT_REQUIRED,
                                        headers={"User-Agent": "image-mode-portal"})
        self._base = ""
        self._authorization: dict[str, str] = {}  # scope -> Authorization header
        self._lock = threading.Lock()

    @staticmethod
    def _load_certs_d(context, directory):
        for ca in sorted(glob.glob(os.path.join(directory, "*.crt"))):
            context.load_verify_locations(cafile=ca)
        for cert in sorted(glob.glob(os.path.join(directory, "*.cert"))):
            key = cert[:-len(".cert")] + ".key"
            if os.path.exists(key):
                context.load_cert_chain(cert, key)

    def close(self):
        self.pool.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- Reads ------------------------------------------------------------------------------------------------------

    def manifest(self, repository: str, reference: str) -> bytes:
        """The manifest of `repository` (its name inside the registry, team/name) at a tag or digest, byte for byte
        as the registry serves it."""
        response = self._get(repository, f"/v2/{repository}/manifests/{reference}",
                             headers={"Accept": ", ".join(MANIFEST_TYPES)})
        return response.data

    def tags(self, repository: str) -> list[str]:
        """Every tag of `repository` ([] when the registry does not know it), following the API's pages."""
        path, found = f"/v2/{repository}/tags/list?n=1000", []
        while path:
            try:
                response = self._get(repository, path)
            except NotFound:
                return found
            try:
                found += json.loads(response.data).get("tags") or []
            except ValueError:
                raise APIError(f"{self.registry} answered the tag list of {repository} with something not JSON") from None
            link = re.match(r"\s*<([^>]+)>", response.headers.get("Link", ""))
            path = self._path_on_registry(link.group(1), repository) if link else ""
        return found

    def _path_on_registry(self, url: str, repository: str) -> str:
        """The path (and query) of a tag list's next page: the API allows an absolute URL, which must be this registry's
        own, since the login goes with the request."""
        parts = urllib.parse.urlsplit(url)
        if (parts.scheme or parts.netloc) and f"{parts.scheme}://{parts.netloc}" != self._base_url():
            raise APIError(f"{self.registry} sent the next page of the tag list of {repository} to another address "
                           f"({url[:200]}); it is not followed")
        return urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))

    # --- HTTP -------------------------------------------------------------------------------------------------------

    def _get(self, repository: str, path: str, *, headers=None):
        if self._unusable:
            raise self._unusable
        scope = f"repository:{repository}:pull"
        url = self._base_url() + path
        response = self._request(url, {**(headers or {}), **self._auth_header(scope)})
        if response.status == 401:
            self._authorize(response.headers.get("WWW-Authenticate", ""), scope)
            response = self._request(url, {**(headers or {}), **self._auth_header(scope)})
        if response.status == 200:
            return response
        said = _registry_says(response)
        where = f"{self.registry}/{repository}"
        if 300 <= response.status < 400:
            raise APIError(f"{where}: the registry sent the read elsewhere (HTTP {response.status}, "
                           f"{response.headers.get('Location', '')[:200]}); the portal reads manifests and tag lists "
                           "from the registry itself and does not follow it")
        if response.status == 404:
            raise NotFound(f"{where}: {said or 'not found'} (HTTP 404)")
        if response.status in (401, 403):
            login = f"the login {self.access.username!r}" if self.access.username else "no login"
            raise APIError(f"{where}: the registry refused {login} (HTTP {response.status}{': ' + said if said else ''});"
                           " check the team's registry credential")
        raise APIError(f"{where}: the registry answered HTTP {response.status}{': ' + said if said else ''}")

    def _auth_header(self, scope):
        value = self._authorization.get(scope) or self._authorization.get("")
        return {"Authorization": value} if value else {}

    def _request(self, url, headers):
        try:
            return self.pool.request("GET", url, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise APIError(f"cannot reach the registry {self.registry}: {reason}. Is it running, and is the "
                           "address right?") from None

    def _base_url(self) -> str:
        """https://REGISTRY, or for an insecure registry that does not speak TLS http://REGISTRY (found once)."""
        with self._lock:
            if self._base:
                return self._base
            try:
                egress.check_image(f"{self.host}/", what=f"The registry {self.registry}")
            except egress.EgressRefused as exc:
                self._unusable = APIError(str(exc))
                raise self._unusable from None
            schemes = ("https", "http") if self.access.insecure else ("https",)
            failure = None
            for scheme in schemes:
                try:
                    self._request(f"{scheme}://{self.host}/v2/", {})
                except APIError as exc:
                    failure = exc
                    continue
                self._base = f"{scheme}://{self.host}"
                return self._base
            raise failure

    def _authorize(self, challenge: str, scope: str) -> None:
        """Answer a 401's WWW-Authenticate: Basic with the login, or a Bearer token from the challenge's realm."""
        scheme = challenge.split(" ", 1)[0].lower()
        username, password = self.access.username, self.access.password
        basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode() if username else ""
        if scheme == "basic":
            if not basic:
                raise APIError(f"{self.registry} wants a login and the team has no registry credential for it")
            self._authorization[""] = basic
            return
        if scheme != "bearer":
            raise APIError(f"{self.registry} asks for an authentication the portal does not speak: {challenge[:100]!r}")
        params = dict(CHALLENGE_RE.findall(challenge))
        if not params.get("realm"):
            raise APIError(f"{self.registry} asks for a token without saying where to get it: {challenge[:100]!r}")
        realm = params["realm"]
        self._check_realm(realm)
        fields = {"service": params.get("service", ""), "scope": params.get("scope") or scope}
        response = self._token_request(realm, fields, {"Authorization": basic} if basic else {})
        if response.status != 200:
            raise APIError(f"{self.registry}'s token service refused the login {username!r} "
                           f"(HTTP {response.status}); check the team's registry credential")
        try:
            answer = json.loads(response.data)
            token = answer.get("token") or answer.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise APIError(f"{self.registry}'s token service answered without a token")
        self._authorization[scope] = f"Bearer {token}"

    def _check_realm(self, realm: str) -> None:
        """Refuse a token service the portal must not ask: not HTTP(S), plain HTTP for a registry reached over HTTPS
        (unless its access is marked insecure), or an address the egress policy refuses."""
        what = f"{self.registry}'s token service"
        scheme = urllib.parse.urlsplit(realm).scheme.lower()
        if scheme not in ("https", "http"):
            raise APIError(f"{what} is {realm[:200]!r}, not an HTTP(S) address; it is not asked")
        if scheme == "http" and self._base.startswith("https:") and not self.access.insecure:
            raise APIError(f"{what} is {realm[:200]} over plain HTTP; the portal does not send a registry's login, "
                           "or ask for its token, in the clear when the registry itself speaks HTTPS. Mark the "
                           "team's registry credential insecure if that is really wanted")
        try:
            egress.check_url(realm, what=what)
        except egress.EgressRefused as exc:
            raise APIError(str(exc)) from None

    def _token_request(self, realm, fields, headers):
        try:
            return self.pool.request("GET", realm, fields={k: v for k, v in fields.items() if v}, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise APIError(f"cannot reach {self.registry}'s token service {realm}: "
                           f"{getattr(exc, 'reason', None) or exc}") from None


def _registry_says(response) -> str:
    """The first error message of the registry's JSON answer ({"errors": [{"code", "message"}]}), else ""."""
    try:
        errors = json.loads(response.data).get("errors") or []
    except (ValueError, AttributeError):
        return ""
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    return " ".join(str(part) for part in (first.get("code"), first.get("message")) if part).lower()[:300]


_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("registry_session", default=None)


@contextlib.contextmanager
def session(access):
    """Reads of `access`'s registry inside the block share one Session (threads started with the block's context
    too: `contextvars.copy_context().run`); the connections close at its end."""
    with Session(access) as opened:
        token = _current.set(opened)
        try:
            yield opened
        finally:
            _current.reset(token)


@contextlib.contextmanager
def session_for(access):
    """The block's open session when it reads the same registry with the same access, else one for this read."""
    current = _current.get()
    if current is not None and current.access == access:
        yield current
        return
    with Session(access) as opened:
        yield opened
