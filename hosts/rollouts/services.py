"""Every state change of rollouts, written once: a stage's policy, starting a rollout (by an operator, or by a
promotion to a stage whose hosts follow automatically), pause, resume, abort, and resuming one whose worker died.
The engine (`hosts.rollouts.engine`) does the rest, in a worker."""

import logging

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from builds.models import ImageDefinition
from builds.releases.models import Promotion, PromotionStatus, Stage
from hosts.actions import repository_of, team_repositories
from hosts.models import DriftInRollouts, Host, HostRuntime, ReferenceDigest, RuntimeDrift, RuntimePolicy
from portal import services as portal_services
from portal import ssh
from portal.access import check_team_action
from portal.models import Action, RunKind, RunStatus

from . import policy as rules
from .models import (
    ACTIVE_ROLLOUT_STATUSES,
    MaintenanceWindow,
    Rollout,
    RolloutHost,
    RolloutPolicy,
    RolloutStatus,
    Step,
)

log = logging.getLogger(__name__)


class RolloutError(Exception):
    """A rollout request that cannot be done, with a message for the person who asked."""


# --- Policy ----------------------------------------------------------------------------------------------------------


def stage_hosts(stage, references=None):
    """The hosts a rollout on `stage` acts on: assigned to the stage, or following its tag in the team's repositories."""
    if references is None:
        references = [stage.reference(d) for d in ImageDefinition.objects.filter(team_id=stage.team_id)]
    return Host.objects.filter(team_id=stage.team_id).following(references, stage=stage)


def policy_for(stage):
    """The stage's policy (a default one, unsaved, when it has none)."""
    return RolloutPolicy.objects.filter(stage=stage).first() or RolloutPolicy(stage=stage)


def policy_save(*, stage, user, fields, windows, request=None):
    """Save a stage's rollout policy (team admins), refusing one that could never finish, with the reason.
    `windows`: [{"weekdays": [0..6], "starts": "HH:MM", "ends": "HH:MM"}]."""
    check_team_action(user, stage.team, Action.ADMIN)
    current = policy_for(stage)
    for name, value in fields.items():
        setattr(current, name, value)
    data = _data_without_db(current, windows)
    labels = list(stage_hosts(stage).values_list("labels", flat=True))
    try:
        rules.check(data, host_labels=labels)
    except rules.PolicyRefused as exc:
        raise ValidationError(str(exc)) from None
    with transaction.atomic():
        current.updated_at, current.updated_by = timezone.now(), user
        current.save()
        current.windows.all().delete()
        MaintenanceWindow.objects.bulk_create([
            MaintenanceWindow(policy=current, weekdays=w["weekdays"], starts=w["starts"], ends=w["ends"])
            for w in windows])
        portal_services.audit(action="rollout.policy", summary=f"changed the rollout policy of {stage}", actor=user,
                              team=stage.team, obj=current, request=request, detail=data)
    return current


def _data_without_db(policy, windows):
    fields = ("follow_automatically", "canary_selector", "canary_count", "canary_percent", "batch_count",
              "batch_percent", "soak_seconds", "max_failed_percent", "max_failed_total", "rollback_failed",
              "budget_label", "max_updating_per_group", "max_downloading_per_group", "soft_reboot", "window_timezone")
    return {**{name: getattr(policy, name) for name in fields}, "windows": windows}


# --- Starting --------------------------------------------------------------------------------------------------------


def rollout_start(*, stage, reference, digest, user, switch=False, promotion=None, request=None, trigger="button"):
    """Start a rollout of `digest` (what `reference` holds) to the hosts that follow `stage`, under the stage's policy.
    user=None is the portal itself (a promotion to a stage whose hosts follow automatically)."""
    if user is not None:
        check_team_action(user, stage.team, Action.OPERATE)
    reference, digest = (reference or "").strip(), (digest or "").strip()
    if not ssh.valid_image_reference(reference) or not digest.startswith("sha256:"):
        raise RolloutError("Name the image reference (registry/repository:tag) and the digest to roll out (sha256:…).")
    if switch and repository_of(reference) not in team_repositories(stage.team):
        raise RolloutError(f"{reference} is not an image of {stage.team}: hosts switch only to the team's repositories "
                           "(its image definitions' and those its hosts track).")
    current = policy_for(stage)
    data = current.as_data() if current.pk else _data_without_db(current, [])
    hosts = list(stage_hosts(stage).exclude(host_key="").order_by("name", "id"))
    skipped = non_compliant_skipped(stage, hosts)
    hosts = [host for host in hosts if host.pk not in skipped]
    if not hosts and skipped:
        raise RolloutError(f"Every host that follows {stage.name} ({len(skipped)}) changed at runtime, which "
                           f"{stage.name}'s runtime policy forbids, and the policy skips them in rollouts: fold the "
                           "changes back or reset the hosts first.")
    if not hosts:
        raise RolloutError(f"No host follows {stage.name} (assigned to the stage or tracking its tag with a confirmed "
                           "host key): there is nothing to roll out to.")
    try:
        rules.check(data, host_labels=[h.labels for h in hosts])
    except rules.PolicyRefused as exc:
        raise RolloutError(f"The rollout policy of {stage.name} cannot finish: {exc}") from None
    batches = rules.plan_batches([rules.Planned(h.pk, h.name, h.labels) for h in hosts], data)
    first = 0 if (data.get("canary_selector") or data.get("canary_count") or data.get("canary_percent")) else 1
    known = dict(ReferenceDigest.objects.filter(reference=reference).values_list("architecture", "digest"))
    digests = known if digest in known.values() else {"": digest}
    version = ReferenceDigest.objects.filter(reference=reference, digest=digest).values_list("version", flat=True).first()
    with transaction.atomic():
        Stage.objects.select_for_update().get(pk=stage.pk)  # one start at a time per stage
        running = Rollout.objects.filter(stage=stage, status__in=ACTIVE_ROLLOUT_STATUSES).first()
        if running is not None:
            raise RolloutError(f"Rollout #{running.pk} is still {running.get_status_display().lower()} on "
                               f"{stage.name}: one rollout at a time per stage. Abort it or wait for it to end.")
        run = portal_services.run_create(kind=RunKind.ROLLOUT, title=f"Rollout to {stage.name}: {digest[:19]}…",
                                         team=stage.team, started_by=user, trigger=trigger)
        rollout = Rollout.objects.create(
            team=stage.team, stage=stage, run=run, promotion=promotion, reference=reference, digest=digest,
            digests=digests, version=version or "", switch=switch, policy=data, started_by=user, batch=first,
            batches=len(batches))
        run.subject = rollout
        run.save(update_fields=["content_type", "object_id"])
        rows = []
        for number, batch in enumerate(batches, start=first):
            for position, planned in enumerate(batch):
                host = next(h for h in hosts if h.pk == planned.host_id)
                rows.append(RolloutHost(rollout=rollout, host=host, batch=number, position=position,
                                        group=rules.group_of(host.labels, data.get("budget_label")),
                                        previous_digest=host.booted_digest))
        rows += [RolloutHost(rollout=rollout, host=host, batch=first, position=len(rows) + i, step=Step.SKIPPED,
                             active=False, finished_at=timezone.now(), previous_digest=host.booted_digest,
                             reason=f"non-compliant: changed at runtime, which {stage.name} forbids; its runtime "
                                    "policy skips such hosts in rollouts")
                 for i, host in enumerate(skipped.values())]
        try:
            with transaction.atomic():
                RolloutHost.objects.bulk_create(rows)
        except IntegrityError:
            busy = RolloutHost.objects.filter(active=True, host__in=hosts).select_related("host", "rollout").first()
            raise RolloutError(f"{busy.host.name if busy else 'A host'} is in rollout "
                               f"#{busy.rollout_id if busy else '?'} already: a host takes part in one rollout at a "
                               "time.") from None
        portal_services.audit(
            action="rollout.start", summary=f"started rollout #{rollout.pk} of {digest[:19]}… to "
            f"{len(rows) - len(skipped)} hosts of {stage} in {len(batches)} batch{'es' if len(batches) != 1 else ''}"
            + (f", skipping {len(skipped)} non-compliant" if skipped else "")
            + (f" (promotion #{promotion.pk}, hosts follow automatically)" if promotion and user is None else ""),
            actor=user, actor_name=None if user else "portal", team=stage.team, obj=rollout, request=request,
            detail={"reference": reference, "digest": digest, "hosts": len(rows) - len(skipped), "batches": len(batches),
                    "policy": data, "run": run.pk, "skipped_non_compliant": sorted(h.name for h in skipped.values())})
        transaction.on_commit(lambda: _enqueue(rollout))
    return rollout


def non_compliant_skipped(stage, hosts):
    """{pk: host} of `hosts` a rollout to `stage` leaves out: changed at runtime while the stage's runtime policy
    forbids it and says to skip them. Otherwise none: a rollout updates them, and the new deployment drops the /usr
    overlay (bootc's three-way merge keeps their /etc changes)."""
    policy = RuntimePolicy.objects.filter(stage=stage).first()
    if policy is None or policy.drift != RuntimeDrift.FORBIDDEN or policy.rollouts != DriftInRollouts.SKIP:
        return {}
    changed = set(HostRuntime.objects.filter(host__in=[h.pk for h in hosts], has_changes=True)
                  .values_list("host_id", flat=True))
    return {host.pk: host for host in hosts if host.pk in changed}


def _enqueue(rollout):
    from .tasks import rollout_run  # a cycle: the task calls the engine, which calls these services

    portal_services.run_enqueue(rollout_run, rollout.pk, run=rollout.run, what="the rollout")


def promotion_applied(*, reference, digest, architecture="", digests=None):
    """Releases announce an applied promotion: a stage whose hosts follow automatically starts a rollout of it."""
    repository, _, tag = reference.rpartition(":")
    definition = ImageDefinition.objects.filter(repository=repository).select_related("team").first()
    if definition is None:
        return None
    stage = Stage.objects.filter(team=definition.team, name=tag).first()
    if stage is None or not RolloutPolicy.objects.filter(stage=stage, follow_automatically=True).exists():
        return None
    promotion = (Promotion.objects.filter(target_stage=stage, definition=definition, digest=digest,
                                          status=PromotionStatus.APPLIED).order_by("-applied_at").first())
    try:
        return rollout_start(stage=stage, reference=reference, digest=digest, user=None, promotion=promotion,
                             trigger="promotion")
    except RolloutError as exc:
        portal_services.audit(action="rollout.not_started", summary=f"no rollout of {digest[:19]}… to {stage}: {exc}",
                              team=stage.team, obj=stage, actor_name="portal")
        return None


# --- Controls --------------------------------------------------------------------------------------------------------


def _control(rollout, user, *, allowed, status, action, summary, request=None, **fields):
    if user is not None:
        check_team_action(user, rollout.team, Action.OPERATE)
    with transaction.atomic():
        # The engine parks under this lock too: a parked rollout is woken to act on the change at once.
        locked = Rollout.objects.select_for_update(of=("self",)).select_related("run").get(pk=rollout.pk)
        if locked.status not in allowed:
            raise RolloutError(f"Rollout #{locked.pk} is {locked.get_status_display().lower()}: it cannot be "
                               f"{summary}.")
        Rollout.objects.filter(pk=locked.pk).update(status=status, **fields)
        portal_services.audit(action=action, summary=f"{summary} rollout #{locked.pk} of {locked.stage}", actor=user,
                              actor_name=None if user else "portal", team=locked.team, obj=locked, request=request,
                              detail={"from": locked.status, "to": status, **{k: str(v) for k, v in fields.items()}})
        if locked.run.is_parked:
            transaction.on_commit(lambda: rollout_wake(locked))
    rollout.refresh_from_db()
    return rollout


def rollout_pause(*, rollout, user, request=None):
    """No new step starts; steps under way finish."""
    return _control(rollout, user, allowed=(RolloutStatus.RUNNING,), status=RolloutStatus.PAUSED,
                    action="rollout.pause", summary="paused", request=request)


def rollout_resume(*, rollout, user, request=None):
    rollout = _control(rollout, user, allowed=(RolloutStatus.PAUSED,), status=RolloutStatus.RUNNING,
                       action="rollout.resume", summary="resumed", request=request)
    return rollout


def rollout_abort(*, rollout, user, rollback=False, request=None, note=""):
    """Stop the rollout: hosts not rebooted yet are skipped; with `rollback`, hosts already on the new digest are
    rolled back."""
    return _control(rollout, user, allowed=(RolloutStatus.RUNNING, RolloutStatus.PAUSED), status=RolloutStatus.ABORTING,
                    action="rollout.abort", summary="aborted" + (" (rolling back updated hosts)" if rollback else "")
                    + (f" ({note})" if note else ""), request=request, abort_with_rollback=rollback)


def rollout_wake(rollout, *, at=None):
    """Send the task that takes up a parked rollout, now or at `at`. A broker that does not take it only delays the
    rollout: beat's `rollouts_wake_due` sends it again once the time has come."""
    from .tasks import rollout_run  # a cycle: the task calls the engine, which calls these services

    countdown = max(0.0, (at - timezone.now()).total_seconds()) if at is not None else 0
    try:
        rollout_run.apply_async(args=[rollout.pk], countdown=countdown)
    except Exception as exc:  # noqa: BLE001 - kombu and redis-py raise several types when the broker is down
        log.warning("rollout %s: could not send the task that takes it up (%s); beat sends it again", rollout.pk, exc)


def rollouts_wake_due(now=None):
    """Parked rollouts whose time has come, or whose run someone asked to cancel: send their task again (beat calls
    this every minute, so a countdown lost with the broker delays a rollout by a minute at most). Returns them."""
    now = now or timezone.now()
    due = list(Rollout.objects.active().filter(run__status=RunStatus.RUNNING, run__parked_until__isnull=False).filter(
        Q(run__parked_until__lte=now) | Q(run__cancel_requested_at__isnull=False)))
    for rollout in due:
        rollout_wake(rollout)
    return due


def rollouts_resume_orphans():
    """Rollouts still going whose run ended under them (a worker killed, then reaped): a new run carries on from the
    rows. Beat calls this; returns the rollouts resumed."""
    resumed = []
    for rollout in Rollout.objects.active().select_related("run", "stage", "team"):
        if rollout.run.is_active:
            continue
        with transaction.atomic():
            locked = Rollout.objects.select_for_update().select_related("run").get(pk=rollout.pk)
            if locked.run.is_active or not locked.is_active:
                continue
            previous = locked.run
            run = portal_services.run_create(kind=RunKind.ROLLOUT, title=previous.title, team=locked.team,
                                             started_by=previous.started_by, trigger="resume")
            run.subject = locked
            run.save(update_fields=["content_type", "object_id"])
            Rollout.objects.filter(pk=locked.pk).update(run=run)
            locked.run = run
            portal_services.audit(action="rollout.resume_worker", summary=f"rollout #{locked.pk} carries on in run "
                                  f"{run.pk}: its run {previous.pk} ended under it ({previous.exit_reason})",
                                  team=locked.team, obj=locked, actor_name="portal",
                                  detail={"previous_run": previous.pk, "run": run.pk})
            transaction.on_commit(lambda r=locked: _enqueue(r))
        resumed.append(locked)
    return resumed
