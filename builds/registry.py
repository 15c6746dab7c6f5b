"""The registry side: skopeo argument lists, the auth file podman and skopeo share, TLS policy, and inspect output.

Credentials never appear on a command line (where `ps` would show them): they go into a 0600 auth file next to the build
context, passed with --authfile and deleted with it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from django.conf import settings

from portal.text import storable

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


def copy_by_digest_args(source: str, destination: str, *, tls_verify: bool, authfile: str | None = None) -> list[str]:
    """Copy repo@sha256:... to another reference (e.g. a stage tag) keeping the digest. For promotions."""
    args = ["skopeo", "copy", "--preserve-digests", "--multi-arch=all",
            f"--src-tls-verify={'true' if tls_verify else 'false'}",
            f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
    if authfile:
        args += ["--authfile", authfile]
    return [*args, f"docker://{source}", f"docker://{destination}"]


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
