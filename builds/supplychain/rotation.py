"""Key rotation, written once: starting and resuming one, and the keys a policy names meanwhile. What the worker
does (re-signing every digest in use, what a finished re-signing changes, retiring old keys at their date) is in
`resigning`.

Why rotation re-signs: containers/image's `sigstoreSigned` takes exactly one key, and every requirement of a scope must
hold, so a policy cannot accept "the old key or the new one" for sigstore. Every digest still in use is therefore
signed with the new key before any policy names it. GPG's `signedBy` takes a key ring, so during the overlap the
policies name both keys (`verifying_keys`), until the date the team gave; then the old key is retired and policies
name only the new one.

Only digests the old key signed are re-signed: the new key vouches for nothing the old one did not.
"""

from __future__ import annotations

import datetime
import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portal.access import check_team_action
from portal.models import Action, RunKind, User
from portal.services import audit, run_create, run_enqueue

from . import tasks
from .models import KeyKind, KeyRotation, RotationStatus, SigningKey

log = logging.getLogger(__name__)


def verifying_keys(key: SigningKey, *, now: datetime.datetime | None = None) -> list[SigningKey]:
    """The keys a policy that names `key` accepts: `key`, and for a GPG key, the old key of a rotation to it that is
    re-signed and still before its date, unless a team admin retired it early (signedBy takes a key ring;
    sigstoreSigned exactly one key)."""
    if key.kind != KeyKind.GPG:
        return [key]
    older = [rotation.old_key for rotation in KeyRotation.objects.overlapping(now)
             .filter(new_key=key, old_key__retired_at__isnull=True).select_related("old_key")]
    return [key, *older]


def key_ring_text(keys: list[SigningKey]) -> str:
    """The public keys as one text for policy.json's keyData: armored GPG keys one after the other make a key ring."""
    return "".join(key.public_key if key.public_key.endswith("\n") else key.public_key + "\n" for key in keys)


def key_rotation_start(*, old_key: SigningKey, new_key: SigningKey, old_until: datetime.datetime, user: User,
                       request=None) -> KeyRotation:
    """Rotate `old_key` to `new_key` (team admins): a rotation row and its run, queued after commit. The old key's
    signatures keep verifying until `old_until` (GPG keys; a sigstore policy names one key)."""
    check_team_action(user, old_key.team, Action.ADMIN)
    if new_key.team_id != old_key.team_id:
        raise ValidationError(f"{new_key} is a key of another team.")
    if new_key.pk == old_key.pk:
        raise ValidationError("Rotate to another key: generate the new one first.")
    if new_key.kind != old_key.kind:
        raise ValidationError(f"{old_key} is a {old_key.kind} key and {new_key} a {new_key.kind} key: rotate to a key "
                              "of the same kind, which every host's policy can verify the same way.")
    for key in (old_key, new_key):
        if not key.is_active:
            raise ValidationError(f"{key} is retired.")
    if old_until <= timezone.now():
        raise ValidationError("The date until which the old key verifies must be in the future.")
    with transaction.atomic():
        locked = SigningKey.objects.select_for_update().get(pk=old_key.pk)
        if KeyRotation.objects.open().filter(old_key=locked).exists():
            raise ValidationError(f"{locked} is being rotated already.")
        if KeyRotation.objects.open().filter(old_key=new_key).exists():
            raise ValidationError(f"{new_key} is itself being rotated away.")
        run = run_create(kind=RunKind.KEY_ROTATION, title=f"Rotate signing key {locked} to {new_key}",
                         team=locked.team, started_by=user)
        rotation = KeyRotation.objects.create(old_key=locked, new_key=new_key, old_until=old_until, run=run,
                                              started_by=user)
        audit(action="signing_key.rotation.start", summary=f"started rotating signing key {locked} to {new_key}; "
              f"{locked} verifies until {old_until:%Y-%m-%d %H:%M} UTC", actor=user, team=locked.team, obj=rotation,
              request=request, detail={"old": locked.fingerprint, "new": new_key.fingerprint,
                                       "old_until": old_until.isoformat(), "run": run.pk})
        transaction.on_commit(lambda: run_enqueue(tasks.key_rotation_run, run.pk, run=run, what="the key rotation"))
    return rotation


def key_rotation_resume(*, rotation: KeyRotation, user: User, request=None) -> KeyRotation:
    """Start a new run of a rotation whose run stopped (failed, cancelled, or its worker died) before every digest was
    re-signed (team admins). Digests already re-signed are skipped."""
    check_team_action(user, rotation.team, Action.ADMIN)
    with transaction.atomic():
        locked = (KeyRotation.objects.select_for_update(of=("self",)).select_related("old_key", "new_key", "run")
                  .get(pk=rotation.pk))
        if locked.status != RotationStatus.RESIGNING:
            raise ValidationError(f"The rotation of {locked.old_key} is {locked.get_status_display().lower()}: "
                                  "nothing to resume.")
        if locked.run is not None and locked.run.is_active:
            raise ValidationError(f"The rotation of {locked.old_key} is running.")
        run = run_create(kind=RunKind.KEY_ROTATION, title=f"Rotate signing key {locked.old_key} to {locked.new_key} "
                         "(resumed)", team=locked.team, started_by=user)
        locked.run = run
        locked.save(update_fields=["run"])
        audit(action="signing_key.rotation.resume", summary=f"resumed rotating signing key {locked.old_key} to "
              f"{locked.new_key}", actor=user, team=locked.team, obj=locked, request=request,
              detail={"run": run.pk, "done": locked.digests_done, "failed": locked.digests_failed})
        transaction.on_commit(lambda: run_enqueue(tasks.key_rotation_run, run.pk, run=run, what="the key rotation"))
    return locked
