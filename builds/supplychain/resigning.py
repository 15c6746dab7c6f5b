"""What a worker does to rotate a key: the whole of the `builds.supplychain.tasks.key_rotation_run` task.

1. Start the run with a conditional UPDATE (a redelivered task does nothing).
2. Find the digests still in use that the old key signed: for each image definition of the team, the registered
   digest keepers (`portal.registry.digest_keepers`: what a stage holds or held within its rollback window, what a host
   boots, has staged or keeps for rollback, ...) say which of its digests are needed, and why.
3. Sign each with the new key (`signing.sign_digest`, the key in a private directory for the whole run), skipping
   those already re-signed (a resumed run), checking for a cancel between digests. A digest that cannot be signed is
   named in the log and counted; the others go on.
4. If every digest is re-signed: in one transaction the stages move to the new key, the rotation enters its overlap,
   the run succeeds (`rotation_resigned`). Otherwise the run fails naming the digests, and the old key stays in every
   policy until a resumed run re-signs them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from builds.models import Build
from builds.runner import LocalRunner, Watch
from portal import registry, runs
from portal.formatting import short_digest
from portal.models import Run
from portal.services import audit, run_set_phase

from .models import KeyKind, KeyRotation, RotationStatus, Signature, SigningKey, StageSigningPolicy
from .signing import SigningFailed, key_in_hand, sign_digest


class RotationFailed(runs.Failed):
    """Some digests could not be re-signed; the message names them."""


@dataclass(frozen=True)
class InUse:
    build: Build
    digest: str
    reasons: tuple[str, ...]


def digests_to_resign(old_key: SigningKey) -> list[InUse]:
    """The digests of `old_key`'s team that the old key signed and that something still uses, each with a build of
    it (for its repository and tag) and the keepers' reasons. A keeper that fails raises: the rotation does not go on
    without knowing what is in use."""
    signed = set(Signature.objects.valid().filter(key=old_key).values_list("digest", flat=True))
    if not signed:
        return []
    builds = {}
    for build in (Build.objects.with_related().filter(definition__team=old_key.team, digest__in=signed)
                  .order_by("definition_id", "-number")):
        builds.setdefault((build.definition_id, build.digest), build)
    by_definition = {}
    for (definition_id, digest), build in builds.items():
        by_definition.setdefault(definition_id, (build.definition, []))[1].append(digest)
    found: dict[str, InUse] = {}
    for definition, digests in by_definition.values():
        reasons: dict[str, list[str]] = {}
        for keeper in registry.digest_keepers():
            for digest, why in keeper.function(definition=definition, digests=digests).items():
                reasons.setdefault(digest, []).extend(why)
        for digest, why in reasons.items():
            if digest not in found:
                found[digest] = InUse(build=builds[(definition.pk, digest)], digest=digest, reasons=tuple(why))
    return sorted(found.values(), key=lambda item: (item.build.definition.name, -item.build.number))


def key_rotation_execute(run_id: int) -> None:
    rotation = (KeyRotation.objects.select_related("old_key", "old_key__team", "new_key", "started_by")
                .filter(run_id=run_id).first())
    run = runs.queued(run_id, rotation, task="key_rotation_run")
    if run is None or not runs.claim(run, phase="finding digests in use"):
        return
    with runs.executing(run, what="the key rotation", unavailable="This worker cannot run skopeo",
                        stopped=f"{rotation.old_key} stays in every policy; resume the rotation to re-sign the rest"
                        ) as execution:
        _rotate(rotation, execution)


def _rotate(rotation, execution):
    run, sink = execution.run, execution.sink
    old, new = rotation.old_key, rotation.new_key
    runner = LocalRunner()
    watch = Watch(run=run, sink=sink, deadline=None)
    sink.write(f"Rotate {old.kind} key {old} ({old.short_fingerprint}) to {new} ({new.short_fingerprint}): re-sign "
               f"every digest in use that {old} signed")
    wanted = digests_to_resign(old)
    already = set(Signature.objects.valid().filter(key=new, digest__in=[item.digest for item in wanted])
                  .values_list("digest", flat=True))
    KeyRotation.objects.filter(pk=rotation.pk).update(digests_total=len(wanted), digests_done=len(already),
                                                      digests_failed=0)
    sink.write(f"{len(wanted)} digest(s) in use signed with {old}; {len(already)} re-signed already")
    for item in wanted:
        sink.write(f"  {item.digest} ({item.build}): {'; '.join(item.reasons)}")
    failed = []
    todo = [item for item in wanted if item.digest not in already]
    if todo:
        run_set_phase(run, f"re-signing {len(todo)} digest(s)")
        workdir = runner.mkdtemp()
        try:
            with key_in_hand(new, runner, workdir) as hand:
                for number, item in enumerate(todo, start=1):
                    watch.poll()  # a cancel between digests stops here
                    sink.write(f"[{number}/{len(todo)}] {item.digest} ({item.build})")
                    if not _resign(rotation, run, hand, item, runner, watch, workdir):
                        failed.append(item)
        finally:
            runner.remove_tree(workdir)
    if failed:
        names = ", ".join(f"{short_digest(item.digest)} ({item.build})" for item in failed)
        raise RotationFailed(f"{len(failed)} of {len(wanted)} digest(s) in use could not be re-signed with {new}: "
                             f"{names}. {old} stays in every policy; resume the rotation once the cause is fixed.")
    with transaction.atomic():
        rotation_resigned(rotation=rotation, run=run)
        sink.write(f"Every digest in use is signed with {new}; the stages that named {old} name {new} now.")
        execution.succeed()


def _resign(rotation, run, hand, item, runner, watch, workdir) -> bool:
    """Sign one digest with the new key; its Signature row, the audit record and the progress count. False (and the
    reason in the log) when it could not be signed."""
    user = rotation.started_by
    signature = Signature.objects.create(build=item.build, key=hand.key, digest=item.digest, run=run,
                                         requested_by=user, requested_by_name=user.username if user else "portal")
    try:
        sign_digest(hand, build=item.build, digest=item.digest, runner=runner, watch=watch, workdir=workdir)
    except SigningFailed as exc:
        watch.log(f"FAILED {item.digest} ({item.build}): {exc}")
        KeyRotation.objects.filter(pk=rotation.pk).update(digests_failed=F("digests_failed") + 1)
        return False
    with transaction.atomic():
        Signature.objects.filter(pk=signature.pk, signed_at__isnull=True).update(signed_at=timezone.now())
        KeyRotation.objects.filter(pk=rotation.pk).update(digests_done=F("digests_done") + 1)
        audit(action="signature.created", summary=f"re-signed {item.build} ({short_digest(item.digest)}) with "
              f"{hand.key} (rotation from {rotation.old_key})", actor_name="portal", team=hand.key.team,
              obj=signature, detail={"digest": item.digest, "key": hand.key.fingerprint, "run": run.pk,
                                     "rotation": rotation.pk, "in_use": list(item.reasons)})
    return True


def rotation_resigned(*, rotation: KeyRotation, run: Run) -> KeyRotation:
    """Every digest in use is signed with the new key (the worker calls this in the transaction that ends its run):
    stages that required, or signed with, the old key name the new one; the new key signs new builds if the old one
    did; GPG policies accept both keys until the date. Each change is audited."""
    locked = KeyRotation.objects.select_for_update(of=("self",)).select_related("old_key", "new_key").get(pk=rotation.pk)
    if locked.status != RotationStatus.RESIGNING or locked.run_id != run.pk:
        raise RotationFailed(f"The rotation became {locked.get_status_display().lower()} while it ran.")
    old, new = locked.old_key, locked.new_key
    team = old.team
    for field, words in (("key", "requires a signature with"), ("entry_key", "signs what enters it with")):
        for policy in (StageSigningPolicy.objects.select_for_update(of=("self",)).filter(**{field: old})
                       .select_related("stage")):
            setattr(policy, field, new)
            policy.set_at = timezone.now()
            policy.save(update_fields=[field, "set_at"])
            audit(action="stage.signing_policy", summary=f"{policy.stage.name} {words} {new} (rotated from {old})",
                  actor_name="portal", team=team, obj=policy.stage,
                  detail={"field": field, "before": old.fingerprint, "after": new.fingerprint,
                          "rotation": locked.pk})
    if old.signs_new_builds:
        SigningKey.objects.filter(pk=old.pk).update(signs_new_builds=False)
        SigningKey.objects.filter(pk=new.pk).update(signs_new_builds=True)
    locked.status, locked.resigned_at = RotationStatus.OVERLAP, timezone.now()
    locked.save(update_fields=["status", "resigned_at"])
    overlap = (f"both keys verify until {locked.old_until:%Y-%m-%d %H:%M} UTC" if old.kind == KeyKind.GPG
               else "policies name the new key only (sigstoreSigned takes one key)")
    audit(action="signing_key.rotation.resigned", summary=f"re-signed {locked.digests_done} digest(s) in use with "
          f"{new}; {overlap}", actor_name="portal", team=team, obj=locked,
          detail={"old": old.fingerprint, "new": new.fingerprint, "digests": locked.digests_done, "run": run.pk})
    return locked


def key_rotations_retire_due(*, now: datetime.datetime | None = None) -> list[KeyRotation]:
    """Beat: rotations past their date retire the old key (it signs nothing more, and no policy names it)."""
    now = now or timezone.now()
    done = []
    for rotation_id in KeyRotation.objects.filter(status=RotationStatus.OVERLAP, old_until__lte=now).values_list(
            "pk", flat=True):
        with transaction.atomic():
            rotation = (KeyRotation.objects.select_for_update(of=("self",)).select_related("old_key", "new_key")
                        .filter(pk=rotation_id, status=RotationStatus.OVERLAP).first())
            if rotation is None:
                continue
            old = rotation.old_key
            SigningKey.objects.filter(pk=old.pk, retired_at__isnull=True).update(retired_at=now,
                                                                                 signs_new_builds=False)
            rotation.status, rotation.retired_at = RotationStatus.DONE, now
            rotation.save(update_fields=["status", "retired_at"])
            audit(action="signing_key.rotation.retired", summary=f"retired signing key {old}: its date came; "
                  f"policies name {rotation.new_key} only", actor_name="portal", team=old.team, obj=rotation,
                  detail={"old": old.fingerprint, "new": rotation.new_key.fingerprint})
            done.append(rotation)
    return done
