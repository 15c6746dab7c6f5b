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
import logging
import os
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from builds import fetches, registry
from builds.runner import CommandFailed, LocalRunner, Watch
from portal import runs
from portal.models import Run, RunStatus
from portal.services import audit, run_set_phase

from . import gpg, trust
from .models import KeyKind, Signature

log = logging.getLogger(__name__)

SIGSTORE_SIGNATURE_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"


class SigningFailed(runs.Failed):
    """The signing failed; the message is the reason people read."""


def signature_execute(run_id: int) -> None:
    signature = Signature.objects.with_related().filter(run_id=run_id).first()
    run = Run.objects.filter(pk=run_id).first()
    if signature is None or run is None or run.status != RunStatus.QUEUED:
        log.info("signature_run for run %s: nothing to do (%s)", run_id,
                 "no such run" if run is None else f"the run is {run.status}")
        return
    if not runs.claim(run, phase="signing"):
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
    build, key = signature.build, signature.key
    repository = build.repository or build.definition.repository
    registry_host = repository.split("/", 1)[0]
    tag = build.tags[0] if build.tags else f"build-{build.number}"
    source, target = f"{repository}@{signature.digest}", f"{repository}:{tag}"
    access = registry.access_for(build.definition.team, registry_host)
    runner = LocalRunner()
    watch = Watch(run=run, sink=sink, deadline=time.monotonic() + limit.seconds)
    refusal = fetches.repository_refusal(repository, build.definition.team)
    if refusal:
        raise SigningFailed(f"{refusal} Nothing was signed.")
    workdir = runner.mkdtemp()
    try:
        authfile = None
        if access.auth_json():
            authfile = os.path.join(workdir, "auth.json")
            runner.write_file(authfile, access.auth_json(), 0o600)
        sink.write(f"Sign {source} with {key.kind} key {key} ({key.short_fingerprint}), through {target}")
        copy = {"tls_verify": access.tls_verify, "authfile": authfile}
        if key.kind == KeyKind.GPG:
            _sign_gpg(signature, runner, watch, workdir, source, target, copy, registry_host)
        else:
            _sign_sigstore(signature, runner, watch, workdir, source, target, copy, registry_host, repository)
        _record(signature, execution)
    finally:
        runner.remove_tree(workdir)


def _registries_d(runner, workdir, registry_host, lookaside=None):
    directory = os.path.join(workdir, "registries.d")
    runner.mkdir(directory)
    runner.write_file(os.path.join(directory, "portal-signatures.yaml"),
                      trust.registries_d_yaml([registry_host], lookaside=lookaside).encode(), 0o600)
    return directory


def _sign_gpg(signature, runner, watch, workdir, source, target, copy, registry_host):
    """skopeo --sign-by with the key in a key ring of the run's own; the signature lands in the lookaside store."""
    store = settings.SUPPLY_CHAIN_LOOKASIDE_DIR
    os.makedirs(store, exist_ok=True)
    registries_d = _registries_d(runner, workdir, registry_host, lookaside=trust.lookaside_url(store))
    with gpg.key_ring(workdir) as home:
        try:
            fingerprint = gpg.import_private_key(home, signature.key.private_key)
        except gpg.GpgFailed as exc:
            raise SigningFailed(f"The key {signature.key} could not be loaded: {exc}") from exc
        try:
            runner.run(registry.copy_by_digest_args(source, target, registries_d=registries_d, sign_by=fingerprint,
                                                    **copy), watch=watch, env={"GNUPGHOME": home})
        except CommandFailed as exc:
            why = registry.skopeo_error(exc.output_tail) or exc
            raise SigningFailed(f"skopeo could not sign {signature.short_digest} ({exc}): {why}") from exc
    run_set_phase(signature.run, "checking")
    repository = source.split("@", 1)[0]
    where = trust.lookaside_path(store, repository, signature.digest)
    found = sorted(glob.glob(os.path.join(glob.escape(where), "signature-*")))
    if not found:
        raise SigningFailed(f"skopeo said it signed, but no signature is in the lookaside store ({where}): check "
                            "SUPPLY_CHAIN_LOOKASIDE_DIR is writable and shared by the workers.")
    watch.log(f"The lookaside store holds {len(found)} signature(s) of {signature.short_digest} in {where}")


def _sign_sigstore(signature, runner, watch, workdir, source, target, copy, registry_host, repository):
    """skopeo --sign-by-sigstore-private-key; the signature is an attachment in the registry, read back after."""
    key_file, passphrase_file = os.path.join(workdir, "key.private"), os.path.join(workdir, "passphrase")
    runner.write_file(key_file, signature.key.private_key.encode(), 0o600)
    runner.write_file(passphrase_file, signature.key.passphrase.encode(), 0o600)
    registries_d = _registries_d(runner, workdir, registry_host)
    try:
        runner.run(registry.copy_by_digest_args(source, target, registries_d=registries_d, sigstore_key=key_file,
                                                passphrase_file=passphrase_file, **copy), watch=watch)
    except CommandFailed as exc:
        why = registry.skopeo_error(exc.output_tail) or str(exc)
        if "sigstore disabled" in why:
            why += (" (this worker's skopeo was built without sigstore, as Debian builds it: sign with a GPG key, or "
                    "give the worker an upstream skopeo)")
        raise SigningFailed(f"skopeo could not sign {signature.short_digest} ({exc}): {why}") from exc
    run_set_phase(signature.run, "checking")
    attachment = f"{repository}:{signature_tag(signature.digest)}"
    try:
        result = runner.run(registry.inspect_args(attachment, tls_verify=copy["tls_verify"], authfile=copy["authfile"],
                                                  raw=True), watch=watch, capture=True)
        layers = json.loads(result.stdout).get("layers") or []
    except (CommandFailed, ValueError) as exc:
        raise SigningFailed(f"The registry did not keep the signature: {attachment} cannot be read ({exc}). The "
                            f"registry must store sigstore attachments (OCI artifacts); the portal asks for them "
                            f"with use-sigstore-attachments: true for {registry_host} in registries.d.") from exc
    if not any(layer.get("mediaType") == SIGSTORE_SIGNATURE_MEDIA_TYPE for layer in layers):
        raise SigningFailed(f"{attachment} holds no sigstore signature: the registry did not keep it.")
    watch.log(f"The registry holds {len(layers)} signature(s) of {signature.short_digest} in {attachment}")


def _record(signature, execution):
    """The signature's time, its audit record and the run succeeded: all or nothing."""
    with transaction.atomic():
        Signature.objects.filter(pk=signature.pk, signed_at__isnull=True).update(signed_at=timezone.now())
        audit(action="signature.created", summary=f"signed {signature.build} ({signature.short_digest}) with "
              f"{signature.key}", actor_name="portal", team=signature.key.team, obj=signature,
              detail={"digest": signature.digest, "key": signature.key.fingerprint, "run": signature.run_id})
        execution.sink.write(f"Recorded: {signature.short_digest} is signed with {signature.key}")
        execution.succeed()
