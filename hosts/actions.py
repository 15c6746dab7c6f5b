"""Operators' actions on one host (upgrade, switch, rollback, reboot), written once: what each will do in plain words,
the request (a `HostAction` and its run; the database allows one active per host) and what a worker does with it
(the command over SSH with its live log, then a re-poll that waits for a reboot)."""

import time

from django.db import IntegrityError, transaction
from django.utils import timezone

from builds.models import ImageDefinition
from builds.releases.apply import stage_signature_requirement
from portal import runs, ssh
from portal import services as portal_services
from portal.access import check_team_action
from portal.logsink import LineSplitter
from portal.models import FINISHED_STATUSES, Action, Run, RunKind
from portal.text import storable

from . import agentcache, runtime
from .connect import ActionInProgress, HostError, session_for, setting, target_for
from .models import ActionKind, EventKind, Host, HostAction, HostEvent, HostState
from .poller import _event, _record_failure, attach_journal, read_status, record_outcome
from .timeline import describe

ACTION_EFFECTS = {
    ActionKind.UPGRADE_CHECK: "asks the registry whether {tracked} has a newer image. Nothing is downloaded or changed.",
    ActionKind.UPGRADE_STAGE: "downloads the newest image of {tracked} and stages it. The host keeps running "
                              "{booted} and boots the update at its next reboot.",
    ActionKind.UPGRADE_APPLY: "downloads and stages the newest image of {tracked}, then REBOOTS the host into it. "
                              "Services on the host stop during the reboot.",
    ActionKind.SWITCH: "makes the host track {image} and stages it. The host keeps running {booted} until its next "
                       "reboot.",
    ActionKind.SWITCH_APPLY: "makes the host track {image}, stages it and REBOOTS the host into it.",
    ActionKind.ROLLBACK: "queues the rollback deployment {rollback} for the next boot. Any staged update is "
                         "discarded. Nothing restarts now.",
    ActionKind.ROLLBACK_APPLY: "queues the rollback deployment {rollback} and REBOOTS the host into it. Any staged "
                               "update is discarded.",
    ActionKind.REBOOT: "REBOOTS the host. It comes back on {next}.",
    ActionKind.RUNTIME_RESET: "deploys the image it boots, {booted}, again and REBOOTS into it ({image}), then tracks "
                              "{tracked} again. It undoes {undoes}. It does not undo {keeps}.",
}


def action_effect(host, kind, image=""):
    """The confirmation text: what the action will do to this host, in plain words."""
    template = ACTION_EFFECTS[kind]
    if kind == ActionKind.RUNTIME_RESET:
        image = reset_image(host) or "its digest"
    booted = describe(host.booted_digest, host.booted_version) if host.booted_digest else "its current deployment"
    rollback = describe(host.rollback_digest, host.rollback_version) if host.rollback_digest else "(none)"
    if host.rollback_queued and host.rollback_digest:
        next_boot = f"the queued rollback {rollback}"
    elif host.staged_digest:
        next_boot = f"the staged update {describe(host.staged_digest, host.staged_version)}"
    else:
        next_boot = f"the same deployment, {booted}"
    text = template.format(tracked=host.spec_image or host.tracked_image or "the image it tracks", booted=booted,
                           image=image or "the new image", rollback=rollback, next=next_boot,
                           undoes=runtime.RESET_UNDOES, keeps=runtime.RESET_KEEPS)
    if kind in (ActionKind.SWITCH, ActionKind.SWITCH_APPLY):
        requirement = stage_signature_requirement(host.stage)
        if requirement:
            text += (f" {requirement}, so bootc enforces the host's container policy (--enforce-container-sigpolicy): "
                     "a host whose policy.json accepts any image by default refuses the switch.")
    return f"{host.name}: this {text}"


def _validate_action(host, kind, image):
    if kind not in ActionKind.values:
        raise HostError("Unknown action.")
    if not host.trusted:
        raise HostError(f"Approve {host} (it waits for an admin's approval) before acting on it." if host.reports_in
                        else f"Confirm {host}'s host key before acting on it.")
    if host.state == HostState.HOST_KEY_CHANGED:
        raise HostError(f"{host} presented a different host key; confirm or reject it before acting on the host.")
    if kind in (ActionKind.SWITCH, ActionKind.SWITCH_APPLY):
        if not ssh.valid_image_reference(image):
            raise HostError("Enter the image to switch to, as registry/repository:tag or registry/repository@sha256:...")
        if not switch_target_allowed(host, image):
            raise HostError(f"{image} is not an image of {host.team}: switch only to the team's repositories (the "
                            "repositories its hosts track).")
    if kind in (ActionKind.ROLLBACK, ActionKind.ROLLBACK_APPLY) and not host.rollback_digest and host.status:
        raise HostError(f"{host} has no rollback deployment.")
    if kind == ActionKind.RUNTIME_RESET:
        if host.reports_in:
            raise HostError(f"{host} reports in: its agent does not reset hosts; reset it over SSH or by hand "
                            "(bootc switch --apply to its digest).")
        if not reset_image(host):
            raise HostError(f"{host}'s status does not say which image and digest it boots, so there is nothing to "
                            "deploy again.")


def reset_image(host):
    """What a reset deploys again: the booted digest, in the repository the host tracks (repository@sha256:...), or ""."""
    tracked = host.spec_image or host.tracked_image
    if not tracked or not host.booted_digest or not ssh.valid_image_reference(tracked):
        return ""
    return f"{repository_of(tracked)}@{host.booted_digest}"


def team_repositories(team):
    """Repositories (registry/path, no tag) a switch may target: the team's image definitions' and those its hosts
    track."""
    references = set(Host.objects.filter(team=team).exclude(tracked_image="").values_list("tracked_image", flat=True))
    references |= set(Host.objects.filter(team=team).exclude(spec_image="").values_list("spec_image", flat=True))
    repositories = {repository_of(r) for r in references if r}
    return repositories | set(ImageDefinition.objects.filter(team=team).values_list("repository", flat=True))


def repository_of(reference):
    name = reference.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    if ":" in last:
        last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def switch_target_allowed(host, image):
    """A switch may target a tag or digest in one of the team's repositories."""
    return repository_of(image) in team_repositories(host.team)


def host_action_request(*, host, kind, user, image="", request=None):
    """Ask for an action on a host: a HostAction with its Run, one active per host (the database refuses a second)."""
    check_team_action(user, host.team, Action.OPERATE)
    image = (image or "").strip()
    _validate_action(host, kind, image)
    if kind == ActionKind.RUNTIME_RESET:
        image = reset_image(host)
    effect = action_effect(host, kind, image)
    with transaction.atomic():
        # Actions whose run ended without releasing the host (a worker killed mid-way, then reaped) release it now.
        HostAction.objects.filter(host=host, active=True, run__status__in=FINISHED_STATUSES).update(
            active=False, finished_at=timezone.now())
        label = ActionKind(kind).label
        run = portal_services.run_create(kind=RunKind.HOST_ACTION, title=f"{label}: {host.name}" + (
            f" → {image}" if image else ""), team=host.team, started_by=user, subject=host)
        try:
            with transaction.atomic():
                action = HostAction.objects.create(host=host, run=run, kind=kind, image=image, requested_by=user)
        except IntegrityError:
            current = HostAction.objects.filter(host=host, active=True).select_related("requested_by").first()
            who = f" by {current.requested_by.username}" if current and current.requested_by else ""
            raise ActionInProgress(
                f"{host} is busy: {current.get_kind_display().lower() if current else 'another action'}{who} is still "
                "running. One action at a time per host; wait for it to end."
            ) from None
        _event(host, EventKind.ACTION, f"{user.username} asked to {label.lower()}" + (f" ({image})" if image else ""),
               user=user, action=action, detail={"effect": effect})
        portal_services.audit(action=f"hosts.action.{kind}", summary=f"asked to {label.lower()} on {host}"
                              + (f" → {image}" if image else ""), actor=user, team=host.team, obj=host,
                              request=request, detail={"run": run.pk, "effect": effect})
        if not host.reports_in:
            transaction.on_commit(lambda: _enqueue_action(action))
        else:
            # A host that reports in is not reached by a worker: the run waits, queued, for its agent to ask for it,
            # which the answer to its next report (from the report front too) tells it.
            transaction.on_commit(lambda: agentcache.action_waits(host.pk))
    return action


def _enqueue_action(action):
    """Hand the action to a worker (`run_enqueue`: a broker that cannot take it ends the run at once with the
    reason), and release the host if it was not handed over."""
    from .tasks import host_action_task  # a cycle: hosts.tasks calls this module's services

    if not portal_services.run_enqueue(host_action_task, action.pk, run=action.run, what="the action"):
        _release(action, outcome=action.run.exit_reason)


def _commands_for(action):
    kind = action.kind
    if kind == ActionKind.UPGRADE_CHECK:
        return [ssh.bootc_upgrade(check=True)]
    if kind == ActionKind.UPGRADE_STAGE:
        return [ssh.bootc_upgrade()]
    if kind == ActionKind.UPGRADE_APPLY:
        return [ssh.bootc_upgrade(apply=True)]
    if kind in (ActionKind.SWITCH, ActionKind.SWITCH_APPLY):
        return [ssh.bootc_switch(action.image, apply=kind == ActionKind.SWITCH_APPLY,
                                 enforce_signatures=bool(stage_signature_requirement(action.host.stage)))]
    if kind == ActionKind.ROLLBACK:
        return [ssh.bootc_rollback()]
    if kind == ActionKind.ROLLBACK_APPLY:
        return [ssh.bootc_rollback(apply=True)]
    if kind == ActionKind.REBOOT:
        return [ssh.systemctl_reboot()]
    if kind == ActionKind.RUNTIME_RESET:
        # A new specification (the digest instead of the tag) makes bootc pull and stage even the booted digest: a
        # fresh deployment of the same image, whose /usr is the image's (no overlay) and whose /etc is merged.
        return [ssh.bootc_switch(action.image, apply=True)]
    raise HostError(f"Unknown action {kind}.")


class _LineWriter:
    """Feeds raw SSH output to a log sink line by line."""

    def __init__(self, sink):
        self.sink = sink
        self.splitter = LineSplitter(carriage_return_ends_line=False)  # bootc's progress bars: the sink keeps the last

    def __call__(self, data):
        for line in self.splitter.feed(data):
            self.sink.write(line)
        self.sink.poll()

    def flush(self):
        for line in self.splitter.rest():
            self.sink.write(line)


def host_action_execute(action_id):
    """Run an action (the task calls this): its commands over SSH, the log through the run's executor, then a
    re-poll. Always ends the run and releases the host, whatever happens."""
    action = HostAction.objects.select_related("host", "host__team", "host__jump_host", "run", "requested_by").get(
        pk=action_id)
    run, host = action.run, action.host
    if not runs.claim(run, phase="connecting"):
        _release(action)
        return run
    # Polls that see the host change while the action runs (a reboot seen by the regular poller first) attribute it.
    Host.objects.filter(pk=action.host_id).update(last_action=action)
    with runs.executing(run, what="the host action", stopped="nothing was run on the host",
                        before_finish=lambda execution: _release(action, outcome=execution.reason)) as execution:
        if run.cancel_requested_at:
            raise runs.Cancelled("cancel requested before it connected")
        execution.reason = _execute(action, host, run, execution.sink)
    return run


def _release(action, outcome=""):
    now = timezone.now()
    HostAction.objects.filter(pk=action.pk).update(active=False, finished_at=now, outcome=storable(outcome)[:2000])
    Host.objects.filter(pk=action.host_id).update(last_action=action)
    action.active, action.finished_at = False, now


def _execute(action, host, run, sink):
    """The action's commands, then the host's new status: returns the run's last line; raises runs.Failed."""
    try:
        target = target_for(host)
    except HostError as exc:
        raise runs.Failed(str(exc)) from exc
    writer = _LineWriter(sink)
    commands = _commands_for(action)
    timeout = setting("HOSTS_ACTION_COMMAND_TIMEOUT", 1800)
    sink.write(f"Connecting to {host.name} ({host.address}:{host.port}) as {host.ssh_user}, host key "
               f"{host.host_key_fingerprint}")
    went_down = False
    try:
        with session_for(target) as connection:
            for command in commands:
                portal_services.run_set_phase(run, command.description)
                sink.write(f"$ {command.for_user(host.ssh_user)}")
                try:
                    result = connection.run(command, timeout=timeout, on_output=writer, on_tick=sink.poll)
                except ssh.HostUnreachable:
                    if action.reboots:
                        went_down = True  # the host rebooted under us: expected
                        writer.flush()
                        sink.write("The connection closed: the host is rebooting.")
                        break
                    raise
                writer.flush()
                if result.exit_status != 0:
                    error = result.error_text() or result.text().strip()
                    sink.write(f"exit status {result.exit_status}")
                    raise runs.Failed(error.splitlines()[-1] if error else
                                      f"`{result.command}` failed with exit status {result.exit_status}.")
    except ssh.HostKeyMismatch as exc:
        _record_failure(host, exc, timezone.now())
        raise runs.Failed(str(exc)) from exc
    except ssh.SSHError as exc:
        raise runs.Failed(str(exc)) from exc
    # The host stays busy (the action active) until the run ends: through the re-poll and the wait for a reboot.
    tracked_before = host.spec_image or host.tracked_image
    host.refresh_from_db()
    if action.kind == ActionKind.RUNTIME_RESET:
        _wait_for_reboot(action, host, run, sink, target)
        return _track_again(action, host, run, sink, target, tracked_before)
    if action.reboots or went_down:
        return _wait_for_reboot(action, host, run, sink, target)
    portal_services.run_set_phase(run, "reading the new status")
    sink.write("Reading the status again")
    outcome = read_status(target, host.pk)
    record_outcome(host, outcome, action=action)
    attach_journal(host)
    return _status_line(host, sink, action)


def _track_again(action, host, run, sink, target, tracked):
    """After a reset the host boots its digest by digest: it tracks what it tracked before again (its origin rewritten
    in place, nothing pulled), then the status and what changed at runtime are read again."""
    if tracked and tracked != action.image:
        command = ssh.bootc_switch_in_place(tracked)
        portal_services.run_set_phase(run, command.description)
        sink.write(f"$ {command.for_user(host.ssh_user)}")
        try:
            with session_for(target) as connection:
                result = connection.run(command, timeout=setting("HOSTS_COMMAND_TIMEOUT", 30))
        except ssh.SSHError as exc:
            raise runs.Failed(f"The reset deployed the image again, but tracking {tracked} again failed: {exc}") from exc
        sink.write(result.text().strip() or f"exit status {result.exit_status}")
        if result.exit_status != 0:
            lines = (result.error_text() or result.text()).strip().splitlines()
            raise runs.Failed(f"The reset deployed the image again, but tracking {tracked} again failed: "
                              f"{lines[-1] if lines else result.exit_status}")
    outcome = read_status(target, host.pk)
    host.refresh_from_db()
    record_outcome(host, outcome, action=action)
    host.refresh_from_db()
    sink.write("Reading what changed at runtime again")
    found = runtime.runtime_read(host)
    sink.write(f"Changed at runtime now: {runtime.summary(found)}")
    return _status_line(host, sink, action)


def _wait_for_reboot(action, host, run, sink, target):
    portal_services.run_set_phase(run, "waiting for the host to come back")
    deadline = time.monotonic() + setting("HOSTS_REBOOT_WAIT_SECONDS", 600)
    interval = setting("HOSTS_REBOOT_POLL_SECONDS", 5)
    sink.write(f"Waiting for {host.name} to come back (up to {setting('HOSTS_REBOOT_WAIT_SECONDS', 600)} s)")
    time.sleep(min(interval, 1.0))
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        outcome = read_status(target, host.pk, timeout=30)
        sink.poll()
        if outcome.error is None:
            host.refresh_from_db()
            record_outcome(host, outcome, action=action)
            attach_journal(host)
            sink.write(f"{host.name} is back (attempt {attempts}).")
            return _status_line(host, sink, action)
        if isinstance(outcome.error, ssh.HostKeyMismatch):
            host.refresh_from_db()
            _record_failure(host, outcome.error, timezone.now())
            raise runs.Failed(str(outcome.error))
        if attempts == 1 or attempts % 6 == 0:
            sink.write(f"not back yet: {outcome.error}")
        time.sleep(interval)
    host.refresh_from_db()
    _record_failure(host, ssh.HostUnreachable("The host did not come back after the reboot."), timezone.now())
    raise runs.Failed("The host did not come back in time; the regular polls will keep trying.")


def _status_line(host, sink, action):
    """The run's last lines: where the host stands now, and what the timeline recorded since the action began."""
    host.refresh_from_db()
    events = HostEvent.objects.filter(host=host, at__gte=action.created_at).exclude(kind=EventKind.ACTION).order_by("at")
    for event in events[:20]:
        sink.write(f"timeline: {event.summary}")
    line = f"Now: {host.get_state_display().lower()}. Next boot: {host.boots_next()}"
    sink.write(line)
    return line


# --- Reads used by views ---------------------------------------------------------------------------------------------


def runs_for_host(host):
    return Run.objects.filter(host_action__host=host).select_related("started_by", "host_action")
