"""What an image reference resolves to in its registry, per architecture: the yardstick for drift.

A thin wrapper around `skopeo inspect --raw`, whose argument list is builds.registry's (deadlines and the portal's own
errors here). For a manifest list or
OCI index it returns each architecture's manifest digest, because bootc reports the per-architecture digest it pulled;
the top-level digest is kept under "". A single-architecture manifest is returned under "" only: hosts that report any
architecture then match it (see `hosts.bootc.digest_matches`).

The TLS rule stays here: any loopback registry is read without TLS (simulated fleets and test registries), where
builds follow the team's registry credential or REGISTRY_INSECURE. Tags are resolved without a team's login (a
reference is shared by every team tracking it), so a registry that wants one cannot be resolved yet.
"""

import hashlib
import json
import shutil
import subprocess

from django.conf import settings

from builds.registry import inspect_args, platform_digests
from portal import egress
from portal.text import storable

TIMEOUT = 20


class ResolveError(Exception):
    pass


def _tls_verify(reference):
    registry = reference.split("/", 1)[0]
    local = registry.split(":")[0] in ("127.0.0.1", "localhost", "::1")
    return not (local or (settings.REGISTRY_INSECURE and registry == settings.REGISTRY_URL.split("/")[0]))


def resolve_digests(reference):
    """{architecture: digest, "": top-level digest} for `reference`. Raises ResolveError, also when the egress policy
    refuses the registry: a host reports its image reference itself, so a compromised host could otherwise make the
    portal query any address inside its network."""
    try:
        egress.check_image(reference, what=f"The image {reference}")
    except egress.EgressRefused as exc:
        raise ResolveError(str(exc)) from None
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise ResolveError("skopeo is not installed")
    argv = inspect_args(reference, tls_verify=_tls_verify(reference), raw=True, retry_times=0, skopeo=skopeo)
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ResolveError(f"skopeo did not answer within {TIMEOUT} s for {reference}") from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise ResolveError(message[-1] if message else f"skopeo failed for {reference}")
    raw = done.stdout
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ResolveError(f"the registry returned an unreadable manifest for {reference}") from None
    digests = {"": "sha256:" + hashlib.sha256(raw).hexdigest()}
    digests.update(platform_digests(manifest))
    return storable(digests)
