"""The registry side: skopeo argument lists, the auth file podman and skopeo share, TLS policy, and inspect output.
Reads that need no skopeo (manifests, tag lists) go over the registry's HTTP API through `registryapi`; skopeo copies
and deletes.

Credentials never appear on a command line (where `ps` would show them): they go into a 0600 auth file next to the build
context, passed with --authfile and deleted with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from django.conf import settings

from portal.text import storable

from . import registryapi
from .models import RegistryCredential


@dataclass
class RegistryAccess:
    registry: str
    username: str = ""
    password: str = ""
    insecure: bool = False

    @property
    def tls_verify(self):
        return not self.insecure

    def auth_json(self) -> bytes | None:
        """The containers-auth.json content, or None when there is nothing to log in with."""
        if not self.username:
            return None
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return json.dumps({"auths": {self.registry: {"auth": token}}}).encode()


def access_for(team, registry: str) -> RegistryAccess:
    """How to reach `registry` for `team`: its stored credential if any; TLS verified unless explicitly insecure.

    The portal's own registry (REGISTRY_URL) without a credential follows REGISTRY_INSECURE (on for loopback).
    """
    credential = RegistryCredential.objects.filter(team=team, registry=registry).first()
    if credential is not None:
        return RegistryAccess(registry=registry, username=credential.username, password=credential.password,
                              insecure=credential.insecure)
    return RegistryAccess(registry=registry, insecure=registry == settings.REGISTRY_URL and settings.REGISTRY_INSECURE)


def inspect_args(reference: str, *, tls_verify: bool, authfile: str | None = None, raw=False,
                 retry_times: int | None = None, skopeo: str = "skopeo") -> list[str]:
    """`skopeo inspect` of `reference` (its manifest as is with `raw`). Builds, promotions and the hosts' tag
    resolution (`hosts.registry`) all inspect through this one argument list."""
    args = [skopeo, "inspect", f"--tls-verify={'true' if tls_verify else 'false'}", "--no-tags"]
    if retry_times is not None:
        args += ["--retry-times", str(retry_times)]
    if authfile:
        args += ["--authfile", authfile]
    if raw:
        args.append("--raw")
    return [*args, f"docker://{reference}"]


def copy_by_digest_args(source: str, destination: str, *, tls_verify: bool, authfile: str | None = None,
                        policy: str | None = None, registries_d: str | None = None, sigstore_key: str | None = None,
                        passphrase_file: str | None = None, sign_by: str | None = None) -> list[str]:
    """Copy repo@sha256:... to another reference (e.g. a stage tag) keeping the digest. For promotions, and for
    signing (a copy onto the build's own tag that adds a sigstore signature, which cannot change the digest).

    `policy` and `registries_d` are containers/image's trust files (containers-policy.json(5),
    containers-registries.d(5)): with them, skopeo itself refuses a source the policy does not accept.
    `sigstore_key` (with its `passphrase_file`) signs the copy with sigstore, `sign_by` (a GPG fingerprint, from the
    key ring in GNUPGHOME) with GPG "simple signing"."""
    args = ["skopeo"]
    if policy:
        args += ["--policy", policy]
    if registries_d:
        args += ["--registries.d", registries_d]
    args += ["copy", "--preserve-digests", "--multi-arch=all",
             f"--src-tls-verify={'true' if tls_verify else 'false'}",
             f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
    if authfile:
        args += ["--authfile", authfile]
    if sigstore_key:
        args += ["--sign-by-sigstore-private-key", sigstore_key]
    if sign_by:
        args += ["--sign-by", sign_by]
    if passphrase_file:
        args += ["--sign-passphrase-file", passphrase_file]
    return [*args, f"docker://{source}", f"docker://{destination}"]


def delete_args(reference: str, *, tls_verify: bool, authfile: str | None = None) -> list[str]:
    """`skopeo delete` of REPO@sha256:...: the registry API's DELETE of the manifest by digest. The registry
    (distribution) removes every tag that points at the manifest with it. Never used with a tag: deleting through a
    tag deletes the manifest too, and with it every other tag on that digest."""
    if "@sha256:" not in reference:
        raise ValueError(f"{reference}: delete by digest only")
    args = ["skopeo", "delete", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if authfile:
        args += ["--authfile", authfile]
    return [*args, f"docker://{reference}"]


def copy_to_dir_args(reference: str, directory: str, *, tls_verify: bool, authfile: str | None = None) -> list[str]:
    """Copy repo@sha256:... out of the registry into a plain directory (manifest.json and the layer blobs by digest),
    for a boot test to read the image's files."""
    args = ["skopeo", "copy", "--quiet", f"--src-tls-verify={'true' if tls_verify else 'false'}"]
    if authfile:
        args += ["--authfile", authfile]
    return [*args, f"docker://{reference}", f"dir:{directory}"]


# --- Retention's reads (the HTTP API) and deletions (skopeo), where no run log is involved -----------------------------------

SKOPEO_TIMEOUT = 60
SKOPEO_FATAL_RE = re.compile(r'level=fatal msg="(?P<msg>(?:[^"\\]|\\.)*)"')


class RegistryError(Exception):
    """The registry did not do what was asked; the message says why, in words."""


class ManifestUnknown(RegistryError):
    pass


class DeletesRefused(RegistryError):
    pass


DELETES_REFUSED = ("The registry refuses deletes: set storage.delete.enabled to true in its configuration "
                   "(REGISTRY_STORAGE_DELETE_ENABLED=true for distribution's docker-registry), or enable deletion in "
                   "Quay/Harbor for the portal's login. Nothing was deleted.")


def _skopeo(build_args, access: RegistryAccess, *, timeout: int = SKOPEO_TIMEOUT) -> str:
    """Run the skopeo argument list `build_args(authfile)` returns, with the access's login in a 0600 auth file of
    its own; its stdout, or RegistryError with skopeo's last line."""
    if shutil.which("skopeo") is None:
        raise RegistryError("skopeo is not installed on this machine")
    with tempfile.TemporaryDirectory(prefix="portal-skopeo-") as directory:
        authfile = None
        if access.auth_json():
            authfile = os.path.join(directory, "auth.json")
            with open(os.open(authfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(access.auth_json())
        argv = build_args(authfile)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)  # noqa: S603 # nosec B603
        except subprocess.TimeoutExpired:
            raise RegistryError(f"skopeo did not finish within {timeout} s") from None
    if done.returncode == 0:
        return done.stdout.decode(errors="replace")
    lines = [line for line in done.stderr.decode(errors="replace").strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"skopeo exited with status {done.returncode}"
    match = SKOPEO_FATAL_RE.search(last)  # time=... level=fatal msg="...": the message alone
    if match:
        last = match.group("msg").replace('\\"', '"')
    lowered = last.lower()
    if "manifest unknown" in lowered or "manifest_unknown" in lowered:
        raise ManifestUnknown(last)
    raise RegistryError(last)


def split_reference(reference: str) -> tuple[str, str, str]:
    """REGISTRY/name:tag or REGISTRY/name@sha256:... -> (registry, name, tag or digest); "latest" when no tag."""
    name, _, digest = reference.partition("@")
    registry, _, path = name.partition("/")
    if not path:
        raise RegistryError(f"{reference}: not an image reference (registry/repository:tag)")
    tag = "latest"
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    return registry, path, digest or tag


def _read(access: RegistryAccess, reference: str, what):
    """`what(session, name, tag or digest)` over the registry's HTTP API (`builds.registryapi`), in the open
    `registryapi.session` of this access if there is one; its errors as the skopeo path raised them."""
    host, name, ref = split_reference(reference)
    if host != access.registry:
        access = RegistryAccess(registry=host, insecure=access.insecure)  # as skopeo: its auth file held no login for it
    try:
        with registryapi.session_for(access) as session:
            return what(session, name, ref)
    except registryapi.NotFound as exc:
        raise ManifestUnknown(str(exc)) from None
    except registryapi.APIError as exc:
        raise RegistryError(str(exc)) from None


def raw_manifest(reference: str, *, access: RegistryAccess) -> str:
    """The manifest `reference` names, as the registry serves it (what `skopeo inspect --raw` printed)."""
    return _read(access, reference, lambda session, name, ref: session.manifest(name, ref).decode())


def tags(repository: str, *, access: RegistryAccess) -> set[str]:
    """The tags of REGISTRY/name (none when the registry does not know the repository)."""
    return set(_read(access, f"{repository}:latest", lambda session, name, _ref: session.tags(name)))


def manifest_digest(text: str) -> str:
    """The digest of a manifest as the registry served it (raw bytes)."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def manifest_blobs(repository: str, digest: str, *, access: RegistryAccess) -> dict[str, int]:
    """{digest: size} of everything the registry stores for repository@digest: the manifest itself, its config and
    layers, and for a manifest list each architecture's manifest and blobs. What garbage collection frees if nothing
    else refers to them."""
    blobs: dict[str, int] = {}
    pending = [digest]
    while pending:
        current = pending.pop()
        text = raw_manifest(f"{repository}@{current}", access=access)
        blobs[current] = len(text.encode())
        manifest = json.loads(text)
        for entry in manifest.get("manifests") or ():
            if entry.get("digest") and entry["digest"] not in blobs:
                pending.append(entry["digest"])
        for entry in [manifest.get("config") or {}, *(manifest.get("layers") or ())]:
            if entry.get("digest") and isinstance(entry.get("size"), int):
                blobs[entry["digest"]] = entry["size"]
    return blobs


def delete_manifest(repository: str, digest: str, *, access: RegistryAccess) -> None:
    """Delete repository@digest (the manifest, and the tags on it) through the registry API. Raises
    DeletesRefused, ManifestUnknown (already gone) or RegistryError."""
    try:
        _skopeo(lambda authfile: delete_args(f"{repository}@{digest}", tls_verify=access.tls_verify,
                                             authfile=authfile), access)
    except ManifestUnknown:
        raise
    except RegistryError as exc:
        # distribution answers 405 UNSUPPORTED when storage.delete.enabled is off.
        text = str(exc).lower()
        if "unsupported" in text or "405" in text or "method not allowed" in text:
            raise DeletesRefused(DELETES_REFUSED) from exc
        raise


def manifest_exists(repository: str, digest: str, *, access: RegistryAccess) -> bool:
    try:
        raw_manifest(f"{repository}@{digest}", access=access)
    except ManifestUnknown:
        return False
    return True


def skopeo_error(output_tail: list[str]) -> str:
    """What skopeo said went wrong: its last fatal line without the logfmt wrapper (time=... level=fatal msg="..."),
    else its last line ("" when it said nothing). Its progress lines (stdout) and its error (stderr) may arrive in
    either order, so the fatal line is looked for, not taken to be last."""
    lines = [line.strip() for line in output_tail if line.strip()]
    for line in reversed(lines):
        match = SKOPEO_FATAL_RE.search(line)
        if match:
            return match.group("msg").replace('\\"', '"')[:400]
    return lines[-1][:400] if lines else ""


def platform_digests(manifest: dict) -> dict[str, str]:
    """{architecture: digest} of a manifest list or OCI index (arm variants as "armv7"); {} for one image's manifest.
    bootc reports the digest of its own architecture's entry, so this is what a host's digest is matched against."""
    digests: dict[str, str] = {}
    for entry in manifest.get("manifests") or ():
        platform = entry.get("platform") or {}
        arch, variant = platform.get("architecture"), platform.get("variant")
        if arch and entry.get("digest") and arch != "unknown":
            digests.setdefault(arch if not variant or arch != "arm" else f"{arch}{variant}", entry["digest"])
    return digests


@dataclass
class ImageFacts:
    digest: str = ""
    architecture: str = ""
    os: str = ""
    labels: dict = field(default_factory=dict)
    size: int | None = None
    layers: int = 0


def parse_inspect(output: str, raw_manifest: str = "") -> ImageFacts:
    """Facts from `skopeo inspect`; the size comes from LayersData (newer skopeo) or the raw manifest's layers."""
    data = json.loads(output)
    layers = data.get("LayersData") or []
    sizes = [layer.get("Size") for layer in layers if isinstance(layer.get("Size"), int)]
    if not sizes and raw_manifest:
        manifest = json.loads(raw_manifest)
        sizes = [layer.get("size") for layer in manifest.get("layers") or [] if isinstance(layer.get("size"), int)]
    return ImageFacts(
        digest=storable(data.get("Digest") or ""),
        architecture=storable(data.get("Architecture") or ""),
        os=storable(data.get("Os") or ""),
        labels=storable(data.get("Labels") or {}),
        size=sum(sizes) if sizes else None,
        layers=len(layers) or len(data.get("Layers") or []),
    )
