"""Every state change of hosts, written once: inventory, trust and actions (polls and timelines: `hosts.poller`).

Views, tasks, management commands (and later the API) call these functions. Each checks access when given an actor,
writes, audits in the same transaction, and enqueues work after commit.
"""

import csv
import io
import logging
import time
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from builds.models import ImageDefinition
from portal import egress, runs, ssh
from portal import services as portal_services
from portal.access import check_team_action
from portal.logsink import LineSplitter
from portal.models import FINISHED_STATUSES, Action, Run, RunKind, RunStatus
from portal.text import storable

from .models import (
    ActionKind,
    EventKind,
    Host,
    HostAction,
    HostEvent,
    HostState,
    JumpHost,
    TeamSSHKey,
)
from .poller import (  # noqa: F401 - reference_digests_set is part of this module's interface
    NAME_MAX,
    ActionInProgress,
    HostError,
    _enqueue_key_fetch,
    _enqueue_poll,
    _event,
    _jump_target,
    _record_failure,
    _refresh_expected,
    attach_journal,
    read_status,
    record_outcome,
    reference_digests_set,
    session_for,
    setting,
    target_for,
)
from .timeline import describe

log = logging.getLogger(__name__)


def promotion_applied(*, reference, digest, architecture=""):
    """Releases announce an applied promotion (portal.registry): hosts that track the stage tag now expect its digest
    (drift is judged against it) without waiting for the next resolution of the tag."""
    digests = {"": digest}
    if architecture:
        digests[architecture] = digest
    reference_digests_set(reference=reference, digests=digests, source="promotion")


# --- Team keys -------------------------------------------------------------------------------------------------------


def team_key_ensure(*, team, actor=None, request=None):
    """The team's SSH key pair, generated on first use (ed25519; the private key encrypted at rest)."""
    existing = TeamSSHKey.objects.filter(team=team).first()
    if existing is not None:
        return existing
    private, public = ssh.generate_keypair(f"portal-{team.slug}")
    with transaction.atomic():
        key, created = TeamSSHKey.objects.get_or_create(
            team=team,
            defaults={"public_key": public, "private_key": private, "fingerprint": ssh.fingerprint(public),
                      "created_by": actor if actor is not None and actor.is_authenticated else None},
        )
        if created:
            portal_services.audit(action="hosts.key_create", summary=f"generated the SSH key of {team} "
                                  f"({key.fingerprint})", actor=actor, team=team, obj=key, request=request)
    return key


# --- Inventory -------------------------------------------------------------------------------------------------------


def normalize_labels(text):
    words = []
    for word in (text or "").replace(",", " ").split():
        word = word.strip()[:60]
        if word and word not in words:
            words.append(word)
    return " ".join(sorted(words))[:500]


def _resolve_tracking(team, stage, tracked_image):
    tracked_image = (tracked_image or "").strip()
    if tracked_image and not ssh.valid_image_reference(tracked_image):
        raise ValidationError({"tracked_image": "Enter an image reference such as registry.example.com/team/os:prod."})
    if tracked_image:
        try:
            egress.check_image(tracked_image, what=f"The image {tracked_image}")
        except egress.EgressRefused as exc:
            raise ValidationError({"tracked_image": str(exc)}) from None
    if stage is not None and stage.team_id != team.pk:
        raise ValidationError({"stage": "Pick one of this team's stages."})
    if stage is not None and tracked_image:
        last = tracked_image.rsplit("/", 1)[-1]
        if "@" not in last and ":" not in last:
            tracked_image = f"{tracked_image}:{stage.tag}"
    return tracked_image


def host_create(*, team, name, address, actor, port=22, ssh_user="root", labels="", stage=None, tracked_image="",
                jump_host=None, host_key="", request=None, audit_summary=None, poll_now=True):
    """Add a host. With `host_key` (pasted by an admin) it is trusted at once; otherwise the portal fetches the key for
    an admin to confirm, and nothing is run on the host until then. A trusted host is polled at once (`poll_now`), or
    by the next beat round (bulk imports and the simulator leave it to beat)."""
    if actor is not None:
        check_team_action(actor, team, Action.ADMIN)
    name = (name or "").strip()[:NAME_MAX]
    address = (address or "").strip()
    if not name:
        raise ValidationError({"name": "Give the host a name."})
    if not address:
        raise ValidationError({"address": "Enter the host's DNS name or IP address."})
    if Host.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"{team} already has a host called {name}."})
    if jump_host is not None and jump_host.team_id != team.pk:
        raise ValidationError({"jump_host": "Pick one of this team's jump hosts."})
    tracked_image = _resolve_tracking(team, stage, tracked_image)
    key_line = ""
    if host_key:
        try:
            key_line = ssh.parse_public_key(host_key)
        except ValueError as exc:
            raise ValidationError({"host_key": str(exc)}) from None
    now = timezone.now()
    with transaction.atomic():
        host = Host.objects.create(
            team=team, name=name, address=address, port=int(port or 22), ssh_user=(ssh_user or "root").strip(),
            labels=normalize_labels(labels), stage=stage, tracked_image=tracked_image, jump_host=jump_host,
            host_key=key_line, host_key_confirmed_at=now if key_line else None,
            host_key_confirmed_by=actor if key_line and actor is not None else None,
            next_poll_at=now if key_line else None,
        )
        portal_services.audit(
            action="hosts.create", summary=audit_summary or f"added host {name} ({address}:{host.port})", actor=actor,
            team=team, obj=host, request=request,
            detail={"address": address, "port": host.port, "user": host.ssh_user, "tracked_image": tracked_image,
                    "host_key": ssh.fingerprint(key_line) if key_line else None},
        )
        if key_line:
            _event(host, EventKind.HOST_KEY_CONFIRMED, f"Host key {ssh.fingerprint(key_line)} confirmed when the host "
                   "was added", user=actor)
            if poll_now:
                transaction.on_commit(lambda: _enqueue_poll([host.pk]))
    return host


def host_update(*, host, actor, request=None, **fields):
    """Change a host's inventory fields (not its key: see host_confirm_key)."""
    if actor is not None:
        check_team_action(actor, host.team, Action.ADMIN)
    allowed = {"name", "address", "port", "ssh_user", "labels", "stage", "tracked_image", "jump_host"}
    changes = {k: v for k, v in fields.items() if k in allowed}
    if "labels" in changes:
        changes["labels"] = normalize_labels(changes["labels"])
    if "tracked_image" in changes or "stage" in changes:
        changes["tracked_image"] = _resolve_tracking(host.team, changes.get("stage", host.stage),
                                                     changes.get("tracked_image", host.tracked_image))
    if "name" in changes:
        changes["name"] = changes["name"].strip()[:NAME_MAX]
        if Host.objects.filter(team=host.team, name=changes["name"]).exclude(pk=host.pk).exists():
            raise ValidationError({"name": f"{host.team} already has a host called {changes['name']}."})
    with transaction.atomic():
        before = {k: str(getattr(host, k)) for k in changes}
        for key, value in changes.items():
            setattr(host, key, value)
        host.save(update_fields=list(changes))
        if "tracked_image" in changes:
            _refresh_expected([host])
        portal_services.audit(action="hosts.update", summary=f"changed host {host}", actor=actor, team=host.team,
                              obj=host, request=request,
                              detail={"before": before, "after": {k: str(v) for k, v in changes.items()}})
    return host


def host_delete(*, host, actor, request=None):
    check_team_action(actor, host.team, Action.ADMIN)
    with transaction.atomic():
        if HostAction.objects.filter(host=host, active=True, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists():
            raise HostError(f"An action is running on {host}; wait for it to end.")
        portal_services.audit(action="hosts.delete", summary=f"removed host {host}", actor=actor, team=host.team,
                              obj=host, request=request, detail={"address": host.address, "port": host.port})
        for action in HostAction.objects.filter(host=host).select_related("run"):
            action.run.delete()  # the host's runs go with it
        host.delete()


CSV_COLUMNS = ("name", "address", "port", "user", "labels", "stage", "image", "host_key")


@dataclass
class ImportRow:
    line: int
    name: str
    ok: bool
    message: str


def hosts_import_csv(*, team, text, actor, request=None):
    """Import hosts from CSV (header: name,address[,port,user,labels,stage,image,host_key]). Each row is imported or
    refused on its own; the report says which and why. Hosts without a host_key column get their key fetched for an
    admin to confirm."""
    check_team_action(actor, team, Action.ADMIN)
    stages = {stage.name.lower(): stage for stage in team.stages.all()}
    report = []
    created = []
    try:
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        return [ImportRow(1, "", False, f"The file is not CSV: {exc}")], []
    if "name" not in header or "address" not in header:
        return [ImportRow(1, "", False, "The first line must be a header naming at least the columns name and "
                                        f"address (known columns: {', '.join(CSV_COLUMNS)}).")], []
    unknown = [h for h in header if h and h not in CSV_COLUMNS]
    try:
        for number, row in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
            name = row.get("name", "")
            if not any(row.values()):
                continue
            if number > 10001:
                report.append(ImportRow(number, name, False, "Stopped: at most 10,000 hosts per file."))
                break
            try:
                port = int(row.get("port") or 22)
                if not 0 < port < 65536:
                    raise ValueError
            except ValueError:
                report.append(ImportRow(number, name, False, f"Port {row.get('port')!r} is not a number from 1 to 65535."))
                continue
            stage = None
            if row.get("stage"):
                stage = stages.get(row["stage"].lower())
                if stage is None:
                    report.append(ImportRow(number, name, False, f"{team} has no stage {row['stage']!r} (stages: "
                                                                 f"{', '.join(sorted(stages)) or 'none'})."))
                    continue
            try:
                with transaction.atomic():
                    host = host_create(team=team, name=name, address=row.get("address", ""), actor=None, port=port,
                                       ssh_user=row.get("user") or "root", labels=row.get("labels", ""), stage=stage,
                                       tracked_image=row.get("image", ""), host_key=row.get("host_key", ""),
                                       audit_summary=f"imported host {name} from CSV", poll_now=False)
            except ValidationError as exc:
                report.append(ImportRow(number, name, False, " ".join(_messages(exc))))
                continue
            created.append(host)
            note = "imported; its key is confirmed" if host.host_key else "imported; confirm its host key"
            report.append(ImportRow(number, name, True, note))
    except csv.Error as exc:
        report.append(ImportRow(reader.line_num, "", False, f"The file stops being CSV here: {exc}"))
    portal_services.audit(action="hosts.import", summary=f"imported {len(created)} hosts from CSV into {team} "
                          f"({sum(1 for r in report if not r.ok)} rows refused)", actor=actor, team=team, request=request,
                          detail={"created": len(created), "refused": sum(1 for r in report if not r.ok),
                                  "ignored_columns": unknown})
    pending = [h.pk for h in created if not h.host_key]
    if pending:
        transaction.on_commit(lambda: _enqueue_key_fetch(pending))
    return report, created


def _messages(exc):
    if hasattr(exc, "message_dict"):
        return [f"{message}" for messages in exc.message_dict.values() for message in messages]
    return list(exc.messages)


def jump_host_create(*, team, name, address, actor, port=22, ssh_user="root", host_key, request=None):
    check_team_action(actor, team, Action.ADMIN)
    try:
        key_line = ssh.parse_public_key(host_key)
    except ValueError as exc:
        raise ValidationError({"host_key": str(exc)}) from None
    if JumpHost.objects.filter(team=team, name=name).exists():
        raise ValidationError({"name": f"{team} already has a jump host called {name}."})
    with transaction.atomic():
        jump = JumpHost.objects.create(team=team, name=name.strip(), address=address.strip(), port=port,
                                       ssh_user=ssh_user.strip() or "root", host_key=key_line)
        portal_services.audit(action="hosts.jump_host_create", summary=f"added jump host {jump} with key "
                              f"{ssh.fingerprint(key_line)}", actor=actor, team=team, obj=jump, request=request)
    return jump


# --- Trust -----------------------------------------------------------------------------------------------------------


def host_fetch_key(*, host, actor=None):
    """Read the key the host presents and keep it as *offered*, for an admin to compare and confirm. Never trusts it."""
    if actor is not None:
        check_team_action(actor, host.team, Action.ADMIN)
    try:
        key = ssh.fetch_host_key(host.address, host.port, jump=_jump_target(host))
    except ssh.SSHError as exc:
        message = storable(str(exc))
        Host.objects.filter(pk=host.pk).update(last_error=message[:2000], last_error_kind=exc.kind)
        host.last_error, host.last_error_kind = message, exc.kind
        raise HostError(str(exc)) from None
    now = timezone.now()
    Host.objects.filter(pk=host.pk).update(offered_host_key=key, offered_host_key_at=now)
    host.offered_host_key, host.offered_host_key_at = key, now
    return key


def host_confirm_key(*, host, key, actor, request=None):
    """Pin `key` (the offered key, or one pasted by the admin) as the host's key. Resumes polling. actor=None is the
    portal itself (the fleet simulator registering its own hosts)."""
    if actor is not None:
        check_team_action(actor, host.team, Action.ADMIN)
    try:
        key_line = ssh.parse_public_key(key)
    except ValueError as exc:
        raise ValidationError({"host_key": str(exc)}) from None
    with transaction.atomic():
        host = Host.objects.select_for_update().get(pk=host.pk)
        previous = host.host_key
        now = timezone.now()
        host.host_key = key_line
        host.host_key_confirmed_at = now
        host.host_key_confirmed_by = actor
        if host.offered_host_key and ssh.fingerprint(host.offered_host_key) == ssh.fingerprint(key_line):
            host.offered_host_key = ""
        host.next_poll_at = now
        host.failures = 0
        if host.state == HostState.HOST_KEY_CHANGED:
            host.state = HostState.NEW
            host.last_error, host.last_error_kind = "", ""
        host.save(update_fields=["host_key", "host_key_confirmed_at", "host_key_confirmed_by", "offered_host_key",
                                 "next_poll_at", "failures", "state", "last_error", "last_error_kind"])
        verb = "replaced the host key of" if previous else "confirmed the host key of"
        portal_services.audit(
            action="hosts.key_confirm", summary=f"{verb} {host}: {ssh.fingerprint(key_line)}", actor=actor,
            team=host.team, obj=host, request=request,
            detail={"fingerprint": ssh.fingerprint(key_line), "previous": ssh.fingerprint(previous) if previous else None},
        )
        _event(host, EventKind.HOST_KEY_CONFIRMED, f"Host key {ssh.fingerprint(key_line)} confirmed"
               + (f" (replacing {ssh.fingerprint(previous)})" if previous else ""), user=actor)
        transaction.on_commit(lambda: _enqueue_poll([host.pk]))
    return host


def fetch_keys(host_ids):
    """Fetch (never trust) the keys of hosts that have none confirmed yet."""
    fetched = 0
    for host in Host.objects.filter(pk__in=host_ids, host_key="").select_related("jump_host"):
        try:
            host_fetch_key(host=host)
            fetched += 1
        except HostError:
            continue
    return fetched


# --- Actions ---------------------------------------------------------------------------------------------------------

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
}


def action_effect(host, kind, image=""):
    """The confirmation text: what the action will do to this host, in plain words."""
    template = ACTION_EFFECTS[kind]
    booted = describe(host.booted_digest, host.booted_version) if host.booted_digest else "its current deployment"
    rollback = describe(host.rollback_digest, host.rollback_version) if host.rollback_digest else "(none)"
    if host.rollback_queued and host.rollback_digest:
        next_boot = f"the queued rollback {rollback}"
    elif host.staged_digest:
        next_boot = f"the staged update {describe(host.staged_digest, host.staged_version)}"
    else:
        next_boot = f"the same deployment, {booted}"
    text = template.format(tracked=host.spec_image or host.tracked_image or "the image it tracks", booted=booted,
                           image=image or "the new image", rollback=rollback, next=next_boot)
    return f"{host.name}: this {text}"


def _validate_action(host, kind, image):
    if kind not in ActionKind.values:
        raise HostError("Unknown action.")
    if not host.trusted:
        raise HostError(f"Confirm {host}'s host key before acting on it.")
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


def team_repositories(team):
    """Repositories (registry/path, no tag) a switch may target: the team's image definitions' and those its hosts
    track."""
    references = set(Host.objects.filter(team=team).exclude(tracked_image="").values_list("tracked_image", flat=True))
    references |= set(Host.objects.filter(team=team).exclude(spec_image="").values_list("spec_image", flat=True))
    repositories = {_repository(r) for r in references if r}
    return repositories | set(ImageDefinition.objects.filter(team=team).values_list("repository", flat=True))


def _repository(reference):
    name = reference.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    if ":" in last:
        last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def switch_target_allowed(host, image):
    """A switch may target a tag or digest in one of the team's repositories."""
    return _repository(image) in team_repositories(host.team)


def host_action_request(*, host, kind, user, image="", request=None):
    """Ask for an action on a host: a HostAction with its Run, one active per host (the database refuses a second)."""
    check_team_action(user, host.team, Action.OPERATE)
    image = (image or "").strip()
    _validate_action(host, kind, image)
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
        transaction.on_commit(lambda: _enqueue_action(action))
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
    if kind == ActionKind.SWITCH:
        return [ssh.bootc_switch(action.image)]
    if kind == ActionKind.SWITCH_APPLY:
        return [ssh.bootc_switch(action.image, apply=True)]
    if kind == ActionKind.ROLLBACK:
        return [ssh.bootc_rollback()]
    if kind == ActionKind.ROLLBACK_APPLY:
        return [ssh.bootc_rollback(apply=True)]
    if kind == ActionKind.REBOOT:
        return [ssh.systemctl_reboot()]
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
    host.refresh_from_db()
    if action.reboots or went_down:
        return _wait_for_reboot(action, host, run, sink, target)
    portal_services.run_set_phase(run, "reading the new status")
    sink.write("Reading the status again")
    outcome = read_status(target, host.pk)
    record_outcome(host, outcome, action=action)
    attach_journal(host)
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


# --- Tallies ---------------------------------------------------------------------------------------------------------


TALLIES = {"hosts_hosttally": "team_id, stage_id, state, drifting",
           "hosts_digesttally": "team_id, booted_image, booted_digest, booted_version, architecture"}


def tallies_recount(using="default"):
    """Count the tallies again from the hosts themselves (after migrate or a flush; also a repair)."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        for table, key in TALLIES.items():
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608  # nosec B608 - fixed table names (TALLIES)
            where = "WHERE booted_digest <> ''" if table == "hosts_digesttally" else ""
            cursor.execute(f"INSERT INTO {table} ({key}, n) SELECT {key}, COUNT(*) FROM hosts_host {where} "  # noqa: S608  # nosec B608
                           f"GROUP BY {key}")


def tallies_compact():
    """Fold each tally's +1/-1 rows into one row per key (beat, every minute). Exactly the rows folded are deleted: on
    PostgreSQL in one statement (rows a concurrent writer adds meanwhile stay for next time); SQLite has one writer at
    a time. Returns {table: rows before, after}."""
    out = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for table, key in TALLIES.items():
            cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608  # nosec B608 - fixed table names (TALLIES)
            before = cursor.fetchone()[0]
            if connection.vendor == "postgresql":
                cursor.execute(f"WITH moved AS (DELETE FROM {table} RETURNING {key}, n) "  # noqa: S608  # nosec B608
                               f"INSERT INTO {table} ({key}, n) SELECT {key}, SUM(n) FROM moved GROUP BY {key} "
                               "HAVING SUM(n) <> 0")
            else:
                cursor.execute(f"CREATE TEMP TABLE tally_sums AS SELECT {key}, SUM(n) AS n FROM {table} "  # noqa: S608  # nosec B608
                               f"GROUP BY {key} HAVING SUM(n) <> 0")
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608  # nosec B608
                cursor.execute(f"INSERT INTO {table} ({key}, n) SELECT {key}, n FROM tally_sums")  # noqa: S608  # nosec B608
                cursor.execute("DROP TABLE tally_sums")
            cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608  # nosec B608
            out[table] = (before, cursor.fetchone()[0])
    return out

