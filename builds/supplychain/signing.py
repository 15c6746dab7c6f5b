"""What a worker does to sign a digest: the whole of the `builds.supplychain.tasks.signature_run` task.

1. Start the run with a conditional UPDATE (a redelivered task does nothing).
2. Put the key (a GPG key ring of its own, or the sigstore key and its passphrase), the registry login and a
   registries.d entry in a private 0600 directory.
3. `skopeo copy --preserve-digests --sign-by FINGERPRINT REPO@DIGEST REPO:build-N` (GPG; the signature goes to the
   lookaside store, `SUPPLY_CHAIN_LOOKASIDE_DIR`), or `--sign-by-sigstore-private-key KEY` (the signature is an
   attachment in the registry: the `sha256-<hex>.sig` tag, `use-sigstore-attachments` in registries.d). The copy onto
   the build's own tag cannot change the digest.
4. Find the signature where it was stored: a store that did not keep it fails the run with the setting that fixes it.
5. Record, in one transaction: the signature's time, the audit event, the run succeeded.

The directory is removed whatever happens, so the private key never outlives the run on the worker.
"""

from __future__ import annotations

import glob
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from builds import fetches, registry
from builds.runner import CommandFailed, LocalRunner, Watch
from portal import runs
from portal.formatting import short_digest
from portal.models import RunKind
from portal.services import audit, run_set_phase

from . import gpg, trust
from .models import KeyKind, Signature, SigningKey

SIGSTORE_SIGNATURE_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"


class SigningFailed(runs.Failed):
    """The signing failed; the message is the reason people read."""


def signature_execute(run_id: int) -> None:
    signature = Signature.objects.with_related().filter(run_id=run_id).first()
    run = runs.queued(run_id, signature, task="signature_run")
    if run is None or not runs.claim(run, phase="signing"):
        return
    limit = runs.Limit(settings.PROMOTION_APPLY_TIMEOUT_SECONDS, "PROMOTION_APPLY_TIMEOUT_SECONDS")
    with runs.executing(run, what="the signing", limit=limit, stopped="nothing was signed",
                        unavailable="This worker cannot run skopeo") as execution:
        _sign(signature, execution, limit)


def signature_tag(digest: str) -> str:
    """The tag under which a sigstore attachment of `digest` is stored (cosign's and containers/image's convention)."""
    return digest.replace(":", "-") + ".sig"


def _sign(signature, execution, limit):
    run, sink = execution.run, execution.sink
    runner = LocalRunner()
    watch = Watch(run=run, sink=sink, deadline=time.monotonic() + limit.seconds)
    workdir = runner.mkdtemp()
    try:
        with key_in_hand(signature.key, runner, workdir) as hand:
            sign_digest(hand, build=signature.build, digest=signature.digest, runner=runner, watch=watch,
                        workdir=workdir)
        _record(signature, execution)
    finally:
        runner.remove_tree(workdir)


@dataclass(frozen=True)
class KeyInHand:
    """A key ready for skopeo in a run's private directory: a GPG key ring (`env` GNUPGHOME, `fingerprint`), or the
    sigstore key and passphrase files."""

    key: SigningKey
    env: dict = field(default_factory=dict)
    fingerprint: str = ""
    key_file: str = ""
    passphrase_file: str = ""

    def copy_args(self) -> dict:
        if self.key.kind == KeyKind.GPG:
            return {"sign_by": self.fingerprint}
        return {"sigstore_key": self.key_file, "passphrase_file": self.passphrase_file}


@contextmanager
def key_in_hand(key: SigningKey, runner, workdir: str):
    """The private key of `key` in `workdir` (0600) for as long as the block runs: a GPG key ring of its own, whose
    agent is stopped after, or the sigstore key and its passphrase. The caller removes `workdir`."""
    if key.kind == KeyKind.GPG:
        with gpg.key_ring(workdir) as home:
            try:
                fingerprint = gpg.import_private_key(home, key.private_key)
            except gpg.GpgFailed as exc:
                raise SigningFailed(f"The key {key} could not be loaded: {exc}") from exc
            yield KeyInHand(key=key, env={"GNUPGHOME": home}, fingerprint=fingerprint)
        return
    key_file, passphrase_file = os.path.join(workdir, "key.private"), os.path.join(workdir, "passphrase")
    runner.write_file(key_file, key.private_key.encode(), 0o600)
    runner.write_file(passphrase_file, key.passphrase.encode(), 0o600)
    yield KeyInHand(key=key, key_file=key_file, passphrase_file=passphrase_file)


def sign_digest(hand: KeyInHand, *, build, digest: str, runner, watch, workdir: str) -> str:
    """Sign `digest` (of `build`) with the key in hand: a copy onto the build's own tag with the signing option, which
    cannot change the digest, then the signature is looked for where it was stored. Returns where it is. Raises
    SigningFailed with the reason (a store that did not keep it names the setting that fixes it)."""
    key = hand.key
    repository = build.repository or build.definition.repository
    registry_host = repository.split("/", 1)[0]
    tag = build.tags[0] if build.tags else f"build-{build.number}"
    source, target = f"{repository}@{digest}", f"{repository}:{tag}"
    access = registry.access_for(build.definition.team, registry_host)
    refusal = fetches.repository_refusal(repository, build.definition.team)
    if refusal:
        raise SigningFailed(f"{refusal} Nothing was signed.")
    authfile = None
    if access.auth_json():
        authfile = os.path.join(workdir, "auth.json")
        runner.write_file(authfile, access.auth_json(), 0o600)
    watch.log(f"Sign {source} with {key.kind} key {key} ({key.short_fingerprint}), through {target}")
    store = settings.SUPPLY_CHAIN_LOOKASIDE_DIR
    if key.kind == KeyKind.GPG:
        os.makedirs(store, exist_ok=True)
    registries_d = _registries_d(runner, workdir, registry_host,
                                 lookaside=trust.lookaside_url(store) if key.kind == KeyKind.GPG else None)
    try:
        runner.run(registry.copy_by_digest_args(source, target, registries_d=registries_d, tls_verify=access.tls_verify,
                                                authfile=authfile, **hand.copy_args()), watch=watch, env=hand.env or None)
    except CommandFailed as exc:
        why = registry.skopeo_error(exc.output_tail) or str(exc)
        if "sigstore disabled" in why:
            why += (" (this worker's skopeo was built without sigstore, as Debian builds it: sign with a GPG key, or "
                    "give the worker an upstream skopeo)")
        raise SigningFailed(f"skopeo could not sign {short_digest(digest)} ({exc}): {why}") from exc
    if watch.run is not None and watch.run.kind == RunKind.SIGNING:
        run_set_phase(watch.run, "checking")
    if key.kind == KeyKind.GPG:
        return _gpg_stored(store, repository, digest, watch)
    return _sigstore_stored(runner, watch, repository, registry_host, digest, access.tls_verify, authfile)


def _registries_d(runner, workdir, registry_host, lookaside=None):
    directory = os.path.join(workdir, "registries.d")
    if not os.path.isdir(directory):
        runner.mkdir(directory)
    runner.write_file(os.path.join(directory, "portal-signatures.yaml"),
                      trust.registries_d_yaml([registry_host], lookaside=lookaside).encode(), 0o600)
    return directory


def _gpg_stored(store, repository, digest, watch):
    where = trust.lookaside_path(store, repository, digest)
    found = sorted(glob.glob(os.path.join(glob.escape(where), "signature-*")))
    if not found:
        raise SigningFailed(f"skopeo said it signed, but no signature is in the lookaside store ({where}): check "
                            "SUPPLY_CHAIN_LOOKASIDE_DIR is writable and shared by the workers.")
    watch.log(f"The lookaside store holds {len(found)} signature(s) of {short_digest(digest)} in {where}")
    return where


def _sigstore_stored(runner, watch, repository, registry_host, digest, tls_verify, authfile):
    attachment = f"{repository}:{signature_tag(digest)}"
    try:
        result = runner.run(registry.inspect_args(attachment, tls_verify=tls_verify, authfile=authfile, raw=True),
                            watch=watch, capture=True)
        layers = json.loads(result.stdout).get("layers") or []
    except (CommandFailed, ValueError) as exc:
        raise SigningFailed(f"The registry did not keep the signature: {attachment} cannot be read ({exc}). The "
                            f"registry must store sigstore attachments (OCI artifacts); the portal asks for them "
                            f"with use-sigstore-attachments: true for {registry_host} in registries.d.") from exc
    if not any(layer.get("mediaType") == SIGSTORE_SIGNATURE_MEDIA_TYPE for layer in layers):
        raise SigningFailed(f"{attachment} holds no sigstore signature: the registry did not keep it.")
    watch.log(f"The registry holds {len(layers)} signature(s) of {short_digest(digest)} in {attachment}")
    return attachment


def _record(signature, execution):
    """The signature's time, its audit record and the run succeeded: all or nothing."""
    with transaction.atomic():
        Signature.objects.filter(pk=signature.pk, signed_at__isnull=True).update(signed_at=timezone.now())
        audit(action="signature.created", summary=f"signed {signature.build} ({signature.short_digest}) with "
              f"{signature.key}", actor_name="portal", team=signature.key.team, obj=signature,
              detail={"digest": signature.digest, "key": signature.key.fingerprint, "run": signature.run_id})
        execution.sink.write(f"Recorded: {signature.short_digest} is signed with {signature.key}")
        execution.succeed()
