"""Every state change of the core, written once: the audit trail, teams and memberships, and the life of a run.

Views, tasks, management commands and the API call these functions; nothing else writes these models.
"""

import hmac
import json
import logging
import os
import socket
import unicodedata
from datetime import UTC, datetime

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from . import audit_checkpoints, live, registry, workers
from .access import check_team_action, forget_roles
from .clientip import client_ip
from .crypto import EncryptedTextField, SecretUnreadable, decrypt
from .models import Action, AuditEvent, Membership, Role, Run, RunStatus, Team, User
from .text import storable

log = logging.getLogger(__name__)

# An arbitrary constant: the PostgreSQL advisory lock that serialises appends to the audit chain.
AUDIT_CHAIN_LOCK = 7_311_001


class RunStateError(Exception):
    """A run was not in the state a transition needs (it already started, or already ended)."""


# --- Audit -----------------------------------------------------------------------------------------------------------


def audit(*, action, summary, actor=None, team=None, obj=None, detail=None, request=None, actor_name=None):
    """Append one event to the hash chain, inside the caller's transaction (so it commits or rolls back with the change).

    `obj` is any model instance the event is about; `request` supplies the client address.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK])
        last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
        actor = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
        event = AuditEvent(
            seq=(last["seq"] + 1) if last else 1,
            created_at=timezone.now(),
            actor=actor,
            actor_name=audit_text(actor.username if actor else (actor_name or ""))[:150],
            action=action,
            object_type=obj._meta.label_lower if obj is not None else "",
            object_id=str(obj.pk) if obj is not None else "",
            object_repr=audit_text(str(obj))[:200] if obj is not None else "",
            team=team,
            team_name=audit_text(team.name)[:100] if team else "",
            summary=audit_text(summary)[:500],
            detail=storable(detail or {}),
            ip_address=client_ip(request),
            prev_hash=last["hash"] if last else AuditEvent.GENESIS_HASH,
        )
        # Round-trip the JSON so the hash covers exactly what the database will hand back.
        event.detail = _json_roundtrip(event.detail)
        event.hash = event.compute_hash()
        event.save()
    return event


# Line breaks, other control characters and the bidirectional overrides are shown as escapes in the text fields of an
# event, so that nobody (a username typed at the login form, a name chosen for an object) can make one event read as
# several, or reorder what a reader sees. NUL, which PostgreSQL cannot store, becomes U+FFFD.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x00": "\ufffd"}


def audit_text(text):
    """`text` as the audit trail stores it: one line, with control characters escaped (a newline reads `\\n`)."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[char])
        elif char in _BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            out.append(f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def _json_roundtrip(value):
    return json.loads(json.dumps(value, default=str))


def audit_verify():
    """Walk the chain in order, then hold it against every checkpoint taken outside the database. Returns None if
    intact, else (seq, problem) for the first break. Raises CheckpointError when the checkpoints cannot be read."""
    checkpoints = audit_checkpoints.store().all()
    wanted = {checkpoint.seq for checkpoint in checkpoints}
    seen = {}
    restores = []  # (seq, when) of each "restored from the backup at head #N" (portal.backups)
    expected_prev = AuditEvent.GENESIS_HASH
    expected_seq = 1
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=2000):
        if event.seq != expected_seq:
            return expected_seq, f"event #{expected_seq} is missing (the next one is #{event.seq}): deleted"
        if event.prev_hash != expected_prev:
            return event.seq, f"event #{event.seq} does not follow #{event.seq - 1}: deleted, inserted or reordered"
        if not hmac.compare_digest(event.compute_hash(), event.hash):
            return event.seq, f"event #{event.seq} does not match its hash: edited"
        if event.seq in wanted:
            seen[event.seq] = event.hash
        if event.action == RESTORE_ACTION:
            restores.append((event.seq, event.created_at))
        expected_prev = event.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    for checkpoint in checkpoints:
        if not checkpoint.is_authentic():
            return checkpoint.seq, (f"the checkpoint of #{checkpoint.seq} taken {checkpoint.at} is not signed with this "
                                    "AUDIT_HMAC_KEY: the checkpoint file was edited, or the key changed")
        if _superseded_by_a_restore(checkpoint, restores):
            continue
        if checkpoint.seq > last_seq:
            return last_seq + 1, (f"events #{last_seq + 1} to #{checkpoint.seq} are missing: the chain was checkpointed "
                                  f"at #{checkpoint.seq} on {checkpoint.at} but ends at #{last_seq}: deleted")
        if seen.get(checkpoint.seq) != checkpoint.hash:
            return checkpoint.seq, (f"event #{checkpoint.seq} is not the one checkpointed on {checkpoint.at}: the chain "
                                    "was rewritten from there on")
    return None


def audit_chain_report() -> tuple[bool, str]:
    """(intact, what to say): audit_verify's verdict in the words `manage.py audit_verify` and the audit page use."""
    try:
        problem = audit_verify()
        last = audit_checkpoints.store().last()
    except audit_checkpoints.CheckpointError as exc:
        return False, str(exc)
    if problem is not None:
        seq, message = problem
        return False, f"Audit chain broken at event #{seq}: {message}."
    if last is None:
        checkpoint = "no checkpoint taken yet"
    else:
        taken = datetime.fromisoformat(last.at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        checkpoint = f"last checkpoint #{last.seq} taken {taken}"
    return True, f"Audit chain intact: {AuditEvent.objects.count()} events; {checkpoint}."


RESTORE_ACTION = "portal.restore"


def _superseded_by_a_restore(checkpoint, restores):
    """A checkpoint taken before a restore, of an event the restored backup did not have yet: that chain was given up
    by the restore (its audited event, which only the holder of AUDIT_HMAC_KEY can write, says from which head), and
    the chain goes on from the backup's head instead."""
    taken = datetime.fromisoformat(checkpoint.at)
    return any(checkpoint.seq >= seq and taken < restored_at for seq, restored_at in restores)


def audit_checkpoint():
    """Write the chain's head to the checkpoint store, unless it is already there. Returns the head's checkpoint, or
    None while the trail is empty. Beat runs it every AUDIT_CHECKPOINT_SECONDS."""
    head = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    if head is None:
        return None
    checkpoints = audit_checkpoints.store()
    last = checkpoints.last()
    if last is not None and (last.seq, last.hash) == (head["seq"], head["hash"]):
        return last
    checkpoint = audit_checkpoints.Checkpoint(head["seq"], head["hash"], timezone.now().isoformat()).signed()
    checkpoints.append(checkpoint)
    return checkpoint


# --- Teams and members -----------------------------------------------------------------------------------------------


def team_create(*, name, actor, description="", request=None):
    """A new team with what each feature gives a new team (its default stages, ...: `registry.team_setup`); its
    creator (unless a superuser) becomes its first admin."""
    with transaction.atomic():
        team = Team.objects.create(name=name, slug=Team.slug_for(name), description=description)
        for setup in registry.team_setup_functions():
            setup(team=team)
        if actor is not None and not actor.is_superuser:
            Membership.objects.create(user=actor, team=team, role=Role.ADMIN)
            forget_roles(actor)
        audit(action="team.create", summary=f"created team {team}", actor=actor, team=team, obj=team, request=request)
    return team


def membership_set(*, team, user, role, actor, request=None):
    """Add `user` to `team` with `role`, or change their role. Only team admins and superusers may; actor=None is the
    portal itself (demo data, management commands)."""
    if actor is not None:
        check_team_action(actor, team, Action.ADMIN)
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role!r}.")
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            user=user, team=team, defaults={"role": role}
        )
        old_role = None if created else membership.role
        if old_role == role:
            return membership
        if old_role == Role.ADMIN and role != Role.ADMIN:
            _refuse_removing_last_admin(team, user)
        if not created:
            Membership.objects.filter(pk=membership.pk).update(role=role)
            membership.role = role
        if created:
            summary, action = f"added {user.username} to {team} as {role}", "membership.add"
        else:
            summary, action = f"changed {user.username} in {team} from {old_role} to {role}", "membership.role"
        audit(
            action=action, summary=summary, actor=actor, team=team, obj=membership, request=request,
            detail={"user": user.username, "role": role, "previous_role": old_role},
        )
    forget_roles(user)
    return membership


def membership_remove(*, team, user, actor, request=None):
    if actor is not None:
        check_team_action(actor, team, Action.ADMIN)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(team=team, user=user).first()
        if membership is None:
            return
        if membership.role == Role.ADMIN:
            _refuse_removing_last_admin(team, user)
        audit(
            action="membership.remove", summary=f"removed {user.username} from {team}", actor=actor, team=team,
            obj=membership, request=request, detail={"user": user.username, "role": membership.role},
        )
        membership.delete()
    forget_roles(user)


# --- Single sign-on (portal/sso.py) ----------------------------------------------------------------------------------


def sso_user_provision(*, subject: str, username: str, email: str = "", first_name: str = "", last_name: str = "",
                       request=None):
    """The first sign-in through the identity provider makes the account, tied to the provider's `sub` and without a
    password (it can only sign in through the provider). A local account of the same name is never taken over."""
    username = (username or "").strip()[:150]
    if not username:
        raise ValidationError("The identity provider sent no user name.")
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError(f"A local account named {username} exists already, so the identity provider's "
                              f"{username} cannot sign in as it. A portal admin can rename one of the two.")
    with transaction.atomic():
        user = User(username=username, email=(email or "")[:254], first_name=(first_name or "")[:150],
                    last_name=(last_name or "")[:150], oidc_subject=subject)
        user.set_unusable_password()
        user.save()
        audit(action="sso.user_provision", summary=f"made the account {username} at its first sign-in through the "
              "identity provider", actor=user, obj=user, request=request, detail={"subject": subject})
    return user


def sso_memberships_sync(*, user, wanted: dict, groups: list[str], request=None) -> dict:
    """Make the memberships the identity provider gives `user` those of `wanted` ({team: role}, from their groups):
    added, changed and removed, each audited (membership.add/role/remove, by the portal) and summed up in one
    sso.groups_applied record. Memberships a team admin gave by hand are left alone. Returns {"added", "changed",
    "removed", "kept"}: lists of "team: role"."""
    changes = {"added": [], "changed": [], "removed": [], "kept": []}
    current = {m.team_id: m for m in Membership.objects.filter(user=user).select_related("team")}
    for team, role in wanted.items():
        membership = current.get(team.pk)
        if membership is not None and not membership.from_identity_provider:
            changes["kept"].append(f"{team.slug}: {membership.role} (given by a team admin)")
            continue
        if membership is not None and membership.role == role:
            continue
        try:
            membership_set(team=team, user=user, role=role, actor=None, request=request)
        except PermissionDenied as exc:  # the last admin of a team is not demoted by a group change
            changes["kept"].append(f"{team.slug}: {membership.role} ({exc})")
            continue
        Membership.objects.filter(user=user, team=team).update(from_identity_provider=True)
        changes["changed" if membership is not None else "added"].append(f"{team.slug}: {role}")
    wanted_ids = {team.pk for team in wanted}
    for membership in current.values():
        if membership.from_identity_provider and membership.team_id not in wanted_ids:
            try:
                membership_remove(team=membership.team, user=user, actor=None, request=request)
            except PermissionDenied as exc:
                changes["kept"].append(f"{membership.team.slug}: {membership.role} ({exc})")
                continue
            changes["removed"].append(f"{membership.team.slug}: {membership.role}")
    forget_roles(user)
    if changes["added"] or changes["changed"] or changes["removed"]:
        parts = [f"{what} {', '.join(items)}" for what, items in changes.items() if items and what != "kept"]
        audit(action="sso.groups_applied", summary=f"the identity provider's groups of {user.username}: "
              + "; ".join(parts), actor=user, obj=user, request=request, detail={"groups": groups, **changes})
    return changes


def _refuse_removing_last_admin(team, user):
    others = Membership.objects.filter(team=team, role=Role.ADMIN).exclude(user=user)
    if not others.exists():
        raise PermissionDenied(f"{user.username} is the last admin of {team}; make someone else admin first.")


# --- Runs ------------------------------------------------------------------------------------------------------------


def run_create(*, kind, title, team, started_by=None, trigger="button", subject=None):
    """A new queued run. The caller enqueues its task with `transaction.on_commit`."""
    run = Run.objects.create(
        kind=kind,
        title=title[:200],
        team=team,
        started_by=started_by if started_by is not None and started_by.is_authenticated else None,
        trigger=trigger,
        content_type=ContentType.objects.get_for_model(subject) if subject is not None else None,
        object_id=str(subject.pk) if subject is not None else "",
    )
    return run


def worker_name():
    return f"{socket.gethostname()}:{os.getpid()}"


def _transition(run, *, from_statuses, **changes):
    """The one way a run's state changes: a conditional UPDATE that must hit exactly one row."""
    changed = Run.objects.filter(pk=run.pk, status__in=from_statuses).update(**changes)
    if changed != 1:
        current = Run.objects.filter(pk=run.pk).values_list("status", flat=True).first()
        raise RunStateError(f"run {run.pk} is {current}, not {' or '.join(from_statuses)}")
    for field, value in changes.items():
        setattr(run, field, value)
    transaction.on_commit(lambda: publish_run_status(run))
    return run


def run_start(run, *, phase=""):
    now = timezone.now()
    return _transition(
        run, from_statuses=[RunStatus.QUEUED], status=RunStatus.RUNNING, started_at=now, heartbeat_at=now,
        worker=worker_name(), phase=phase,
    )


def run_park(run, *, until, phase=""):
    """A running run waits, with no worker, until `until` (a rollout waiting for a maintenance window or a soak time):
    the worker's thread is free meanwhile. The run stays running; whoever takes it up (`run_unpark`, through
    `portal.runs.claim`) is enqueued by its feature. The reaper leaves it alone until RUN_STALE_AFTER past `until`."""
    changes = {"parked_until": until, "worker": "", "heartbeat_at": timezone.now()}
    if phase:
        changes["phase"] = storable(phase)[:100]
    return _transition(run, from_statuses=[RunStatus.RUNNING], **changes)


def run_unpark(run, *, phase=""):
    """Take up a parked run on this worker (a conditional UPDATE: of two tasks that wake it, one wins). Raises
    RunStateError when it is not parked (taken up already, ended, or never parked)."""
    now = timezone.now()
    changes = {"parked_until": None, "worker": worker_name(), "heartbeat_at": now}
    if phase:
        changes["phase"] = storable(phase)[:100]
    changed = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING, parked_until__isnull=False).update(**changes)
    if changed != 1:
        raise RunStateError(f"run {run.pk} is not parked")
    for name, value in changes.items():
        setattr(run, name, value)
    transaction.on_commit(lambda: publish_run_status(run))
    return run


def run_set_phase(run, phase):
    return _transition(run, from_statuses=[RunStatus.RUNNING], phase=storable(phase)[:100], heartbeat_at=timezone.now())


def run_heartbeat(run):
    """Tell the reaper the worker is alive. Returns False if the run is no longer running (e.g. it was reaped)."""
    return Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(heartbeat_at=timezone.now()) == 1


def run_finish(run, *, status, reason="", log_lines=None):
    """End a queued or running run. Raises RunStateError if it has already ended. The reason may quote what a tool
    printed: it is stored with any NUL shown as U+FFFD."""
    assert status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
    changes = {"status": status, "finished_at": timezone.now(), "exit_reason": storable(reason)[:10000], "phase": ""}
    if log_lines is not None:
        changes["log_lines"] = log_lines
    return _transition(run, from_statuses=[RunStatus.QUEUED, RunStatus.RUNNING], **changes)


def run_enqueue(task, *args, run, what, queue=None, unserved=""):
    """Hand a run's task to a worker, after the request's transaction committed (call it from `on_commit`). If the
    broker cannot take it, or no live worker consumes `queue` (their heartbeats say so), the run fails now with the
    reason (`unserved` for the latter): never a run that waits forever, never a 500 for a request that already saved
    its rows. Returns whether it was queued."""
    if queue is not None and not task.app.conf.task_always_eager and not _has_consumer(queue):
        try:
            run_finish(run, status=RunStatus.FAILED, reason=unserved or f"No worker takes {what} (queue {queue}).")
        except RunStateError:
            pass
        return False
    try:
        task.apply_async(args=args, queue=queue)
        return True
    except Exception as exc:  # noqa: BLE001 - kombu and redis-py raise several types when the broker is down
        log.error("could not queue %s for run %s: %s", task.name, run.pk, exc)
        try:
            run_finish(run, status=RunStatus.FAILED, reason=f"The portal could not hand {what} to a worker ({exc}). "
                                                            "Retry once the workers' broker answers.")
        except RunStateError:
            pass
        return False


def _has_consumer(queue):
    try:
        return bool(workers.consumers(queue))
    except Exception:  # noqa: BLE001 - Redis does not answer: sending the task fails next, and says so
        return True


# Announced (portal.registry) when someone asks a run to stop, with run and user: a feature whose run stands for others
# (a manifest list waiting for its members' builds) stops those too.
RUN_CANCEL_REQUESTED = "run.cancel_requested"


def run_request_cancel(*, run, user, request=None):
    """Ask for a run to stop. A queued run is cancelled at once; a running one is stopped by its worker."""
    with transaction.atomic():
        if run.status == RunStatus.QUEUED:
            try:
                run_finish(run, status=RunStatus.CANCELLED, reason=f"Cancelled by {user.username} before it started.")
            except RunStateError:
                run.refresh_from_db()
        if run.status == RunStatus.RUNNING:
            Run.objects.filter(pk=run.pk, cancel_requested_at__isnull=True).update(cancel_requested_at=timezone.now())
        audit(
            action="run.cancel", summary=f"asked to cancel {run}", actor=user, team=run.team, obj=run, request=request
        )
        registry.announce(RUN_CANCEL_REQUESTED, run=run, user=user)
    return run


def reap_stale_runs(now=None):
    """Fail runs whose worker died (no heartbeat) or that no worker ever picked up. Returns the runs it ended."""
    reaped = []
    for run in Run.objects.stale(now):
        if run.status == RunStatus.RUNNING and run.parked_until is not None:
            reason = (f"It waited with no worker until {run.parked_until:%Y-%m-%d %H:%M:%S} UTC, and no worker took it "
                      "up again: are workers running for its queue?")
        elif run.status == RunStatus.RUNNING:
            reason = (
                f"The worker running it ({run.worker or 'unknown'}) stopped responding: no heartbeat since "
                f"{run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC. It was probably killed or its machine went down."
            )
        else:
            reason = "No worker picked it up in time: are workers running for its queue?"
        try:
            with transaction.atomic():
                run_finish(run, status=RunStatus.FAILED, reason=reason)
                audit(action="run.reap", summary=f"marked {run} failed: {reason}", team=run.team, obj=run)
        except RunStateError:
            continue  # it ended on its own meanwhile
        reaped.append(run)
    return reaped


def publish_run_status(run):
    live.publish(
        run.group_name(),
        {
            "type": "run.status",
            "run": run.pk,
            "status": run.status,
            "phase": run.phase,
            "exit_reason": run.exit_reason,
        },
    )


def user_create(*, username, password=None, password_hash=None, email="", is_helpdesk=False, is_superuser=False,
                actor=None):
    """A local account with `password`, or with `password_hash` (what make_password returned) where accounts share one
    password: hashing it is a million PBKDF2 rounds (some 0.25 s of CPU), so make run's demo personas hash theirs once."""
    user = User(username=username, email=email, is_helpdesk=is_helpdesk, is_superuser=is_superuser, is_staff=is_superuser)
    if password_hash is None:
        user.set_password(password)
    else:
        user.password = password_hash
    with transaction.atomic():
        user.save()
        audit(action="user.create", summary=f"created user {username}", actor=actor, obj=user)
    return user


# --- Stored secrets --------------------------------------------------------------------------------------------------


class SecretsRotateError(Exception):
    """A stored secret could not be re-encrypted; the message names the model, the row and the field."""


def secrets_rotate(*, actor=None) -> dict[str, int]:
    """Re-encrypt every stored secret (every EncryptedTextField of every model) with the newest key of
    FIELD_ENCRYPTION_KEYS, in one transaction. A secret that no configured key decrypts stops it with
    SecretsRotateError naming the model, the row and the field, and nothing is changed. Returns rows per model."""
    counts: dict[str, int] = {}
    with transaction.atomic():
        for model in apps.get_models():
            fields = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            # The stored text as it is (a plain cast skips the field's decryption), so a failure can name its row.
            raw = {f"stored_{name}": Cast(name, output_field=TextField()) for name in fields}
            rows = model._base_manager.select_for_update().order_by("pk").annotate(**raw)
            for row in rows.values("pk", *raw):
                plain = {}
                for name in fields:
                    stored = row[f"stored_{name}"]
                    if not stored:
                        continue
                    try:
                        plain[name] = decrypt(stored)
                    except SecretUnreadable:
                        raise SecretsRotateError(
                            f"{model._meta.label} row {row['pk']}, field {name}: no key in FIELD_ENCRYPTION_KEYS "
                            "decrypts it (was a key removed before this row was re-encrypted?)") from None
                if plain:
                    model._base_manager.filter(pk=row["pk"]).update(**plain)  # saving encrypts with the newest key
                    counts[model._meta.label] = counts.get(model._meta.label, 0) + 1
        audit(action="secrets.rotate", actor=actor, detail=counts,
              summary=f"re-encrypted {sum(counts.values())} rows of stored secrets with the newest key")
    return counts
