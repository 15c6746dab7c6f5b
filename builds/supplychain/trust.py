"""The containers/image trust configuration the portal writes: `policy.json` (what must have signed an image) and the
`registries.d` entry (where sigstore signatures live). Pure: text in, text out. See `man containers-policy.json` and
`man containers-registries.d`.

The same files serve the promotion's copy (skopeo verifies the source against them, so an unsigned digest is refused
by containers/image itself, not by a check of the portal's) and, later, hosts.
"""

from __future__ import annotations

import base64
import json

import yaml


def policy_json(requirements: dict[str, tuple[str, str]], *, default_accept: bool = True) -> str:
    """A policy that wants, for each scope (repository), a signature by the key given as (kind, public key): `signedBy`
    with the armored key for "gpg", `sigstoreSigned` with the PEM for "sigstore". Images outside those scopes are
    accepted when `default_accept` (the promotion's copy touches only the one repository), else rejected."""
    default = [{"type": "insecureAcceptAnything"}] if default_accept else [{"type": "reject"}]
    docker = {}
    for scope, (kind, public_key) in requirements.items():
        key_data = base64.b64encode(public_key.encode()).decode()
        requirement = ({"type": "signedBy", "keyType": "GPGKeys", "keyData": key_data} if kind == "gpg"
                       else {"type": "sigstoreSigned", "keyData": key_data})
        docker[scope] = [{**requirement, "signedIdentity": {"type": "matchRepository"}}]
    return json.dumps({"default": default, "transports": {"docker": docker}}, indent=2) + "\n"


# The transports a host pulls through besides the registry; each keeps accepting anything under its own "" scope.
HOST_TRANSPORTS = ("docker", "containers-storage", "oci", "oci-archive", "docker-archive", "docker-daemon", "dir")


def host_policy_json(requirements: dict[str, tuple[str, str]]) -> str:
    """The policy.json for hosts: the `requirements` of policy_json() for the team's repositories, a default of
    `reject`, and an `insecureAcceptAnything` "" scope for every transport, so every other image pulls as before.

    The default must not be a lone insecureAcceptAnything: `bootc switch --enforce-container-sigpolicy` refuses such a
    policy outright ("containers-policy.json specifies a default of `insecureAcceptAnything`; refusing usage",
    ostree-ext's container_policy_is_default_insecure reads the global default only), whatever the scopes say."""
    policy = json.loads(policy_json(requirements, default_accept=False))
    transports = policy["transports"]
    for transport in HOST_TRANSPORTS:
        transports.setdefault(transport, {})[""] = [{"type": "insecureAcceptAnything"}]
    return json.dumps(policy, indent=2) + "\n"


def default_is_insecure(policy_text: str) -> bool:
    """What bootc checks before it pulls with --enforce-container-sigpolicy: a global default of exactly one
    insecureAcceptAnything requirement."""
    default = json.loads(policy_text).get("default") or []
    return len(default) == 1 and default[0].get("type") == "insecureAcceptAnything"


def registries_d_yaml(registries: list[str], *, lookaside: str | None = None, staging: bool = True) -> str:
    """A registries.d file for each registry: sigstore signatures as attachments next to the image (the
    `sha256-<hex>.sig` tags, which every OCI registry stores), and GPG signatures in the `lookaside` store (a file://
    directory the workers share, or the portal's read-only /lookaside/ for hosts), written there when `staging`."""
    entries = {}
    for registry in dict.fromkeys(registries):
        entry = {"use-sigstore-attachments": True}
        if lookaside:
            entry["lookaside"] = lookaside
            if staging:
                entry["lookaside-staging"] = lookaside
        entries[registry] = entry
    return yaml.safe_dump({"docker": entries}, sort_keys=True)


def lookaside_url(directory: str) -> str:
    """The lookaside store the workers share, for registries.d."""
    return f"file://{directory}"


def lookaside_path(directory: str, repository: str, digest: str) -> str:
    """Where containers/image keeps GPG signatures of `digest` in a file lookaside store: the repository's path
    (without its registry), then `@sha256=<hex>/signature-N`."""
    path = repository.split("/", 1)[1] if "/" in repository else repository
    algorithm, _, hex_digest = digest.partition(":")
    return f"{directory.rstrip('/')}/{path}@{algorithm}={hex_digest}"
