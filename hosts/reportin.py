"""Hosts that report in: enrollment, approval, status reports and the actions their agent carries out, written once.

A host behind NAT cannot be polled over SSH. Its agent (`hosts/agent/`: a shell script and a systemd timer) presents an
enrollment token once and gets a credential of its own; then it posts `bootc status --format=json` on every tick. The
portal keeps only the sha256 of tokens and credentials.

The report path is the hot one (10,000 hosts, one report a minute each): a report whose bytes hash to the status the
host sent last costs the credential's lookup (one indexed read) and one Redis call that marks the host seen; the
marks are written to PostgreSQL by one UPDATE for every host seen in the last second (`flush_last_seen`). A report that
changed goes through the poller's own `record_outcome`: the same parser, snapshot, timeline and events as an SSH poll.

Actions on such a host are not sent to a worker: the run stays queued until the agent asks for it
(`agent_action_take`), streams its output into the run's log (`agent_action_log`) and reports how it ended
(`agent_action_finish`).
"""

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from portal import redisconn, runs
from portal import services as portal_services
from portal.access import check_team_action
from portal.hashedsecrets import new_secret, secret_hash
from portal.logsink import LogSink
from portal.models import Action, Run, RunStatus
from portal.text import storable

from . import agentcache, notifications, runtime
from .actions import _release
from .connect import NAME_MAX, setting
from .models import EnrollmentToken, EventKind, Host, HostAction, HostMode, HostState
from .poller import PollOutcome, _event, _record_unreadable, reachability_event, record_outcome
from .services import normalize_labels

log = logging.getLogger(__name__)

HOST_SECRET_PREFIX = "imh_"
SEEN_KEY = agentcache.SEEN_KEY
FLUSH_LOCK_KEY = agentcache.FLUSH_LOCK_KEY


class EnrollmentRefused(Exception):
    """An enrollment the portal refused; the message says why, in words the host's logs can show."""

    def __init__(self, message, status=403):
        super().__init__(message)
        self.status = status


class AgentError(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


# --- What changed at runtime ----------------------------------------------------------------------------------------


def host_runtime_report(*, agent, text):
    """What the agent of a host that reports in found changed since it booted (runtime.parse_agent_report): recorded
    by the same `runtime_record` as an SSH reading (a new row and a timeline event only when it changed)."""
    host = Host.objects.select_related("team").get(pk=agent.pk)
    config_diff, package_output, failed = runtime.parse_agent_report(text)
    if failed:
        return runtime.runtime_failed(host, f"the agent could not read it: {failed}")
    return runtime.runtime_record(host, config_diff=config_diff, package_output=package_output)


# --- Enrollment tokens -----------------------------------------------------------------------------------------------


def enrollment_token_create(*, team, user, name, stage=None, uses=1, expires_in=timedelta(days=7), pre_approved=False,
                            labels="", request=None):
    """A new enrollment token for `team` (and `stage`). Returns (token row, the token itself: shown once)."""
    check_team_action(user, team, Action.ADMIN)
    name = (name or "").strip()[:100]
    if not name:
        raise ValidationError({"name": "Say what the token is for (e.g. edge appliances, batch 3)."})
    if stage is not None and stage.team_id != team.pk:
        raise ValidationError({"stage": "Pick one of this team's stages."})
    if not 1 <= int(uses) <= 100000:
        raise ValidationError({"uses": "A token enrolls between 1 and 100,000 hosts."})
    if not timedelta(minutes=5) <= expires_in <= timedelta(days=365):
        raise ValidationError({"expires_in": "A token expires after 5 minutes at the least, a year at the most."})
    secret = EnrollmentToken.generate()
    with transaction.atomic():
        token = EnrollmentToken.objects.create(
            team=team, stage=stage, name=name, token_hash=EnrollmentToken.hash_secret(secret), hint=secret[:10],
            uses_allowed=int(uses), expires_at=timezone.now() + expires_in, pre_approved=pre_approved,
            labels=normalize_labels(labels), created_by=user)
        portal_services.audit(
            action="hosts.enrollment_token.create", actor=user, team=team, obj=token, request=request,
            summary=f"created enrollment token {token} for {uses} host(s)" + (f", stage {stage.name}" if stage else "")
            + (", pre-approved" if pre_approved else ""),
            detail={"uses": token.uses_allowed, "expires_at": token.expires_at.isoformat(), "pre_approved": pre_approved,
                    "stage": stage.name if stage else None})
    return token, secret


def enrollment_token_revoke(*, token, user, request=None):
    check_team_action(user, token.team, Action.ADMIN)
    with transaction.atomic():
        if EnrollmentToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()) != 1:
            return token
        portal_services.audit(action="hosts.enrollment_token.revoke", actor=user, team=token.team, obj=token,
                              request=request, summary=f"revoked enrollment token {token}")
    token.refresh_from_db()
    return token


def host_enroll(*, secret, name, request=None):
    """A host presents an enrollment token: it becomes a Host of the token's team in report-in mode, with a credential
    of its own. Returns (host, credential: the host keeps it, the portal only its hash). Raises EnrollmentRefused for
    an unknown, revoked, expired or used-up token (and audits the attempt) or an unusable name."""
    name = (name or "").strip()[:NAME_MAX]
    token = EnrollmentToken.objects.filter(token_hash=EnrollmentToken.hash_secret(secret or "")).select_related(
        "team", "stage").first() if secret else None
    if token is None:
        _refuse(None, name, "The enrollment token is not known.", secret, request, status=401)
    if not name or any(ch.isspace() or not ch.isprintable() for ch in name):
        _refuse(token, name, "Send the host's name (no spaces), e.g. its hostname.", secret, request, status=400)
    credential = new_secret(HOST_SECRET_PREFIX)
    now = timezone.now()
    with transaction.atomic():
        locked = EnrollmentToken.objects.select_for_update().get(pk=token.pk)
        refusal = locked.refusal(now)
        if not refusal and Host.objects.filter(team=token.team, name=name).exists():
            refusal = f"{token.team} already has a host called {name}: give this one another name."
        if not refusal:
            locked.uses += 1
            locked.save(update_fields=["uses"])
            try:
                with transaction.atomic():
                    host = Host.objects.create(
                        team=token.team, name=name, address="(reports in)", mode=HostMode.REPORT,
                        agent_secret_hash=secret_hash(credential), enrolled_with=token, stage=token.stage,
                        labels=token.labels, approved_at=now if token.pre_approved else None)
            except IntegrityError:
                refusal = f"{token.team} already has a host called {name}: give this one another name."
        if not refusal:
            portal_services.audit(
                action="hosts.enroll", team=token.team, obj=host, request=request, actor_name=f"agent on {name}",
                summary=f"{name} enrolled with token {token}" + (" (pre-approved)" if token.pre_approved else
                                                                 ", waiting for an admin's approval"),
                detail={"token": token.hint, "uses": locked.uses, "uses_allowed": locked.uses_allowed})
            _event(host, EventKind.ACTION, f"Enrolled with token {token}" + (
                "; pre-approved" if token.pre_approved else "; waiting for an admin's approval"))
            return host, credential
    _refuse(token, name, refusal, secret, request, status=409 if "already has a host" in refusal else 403)


def _refuse(token, name, reason, secret, request, *, status):
    """Audit a refused enrollment (in a transaction of its own: the refusal itself writes nothing else) and raise."""
    with transaction.atomic():
        portal_services.audit(
            action="hosts.enroll_refused", team=token.team if token else None, obj=token, request=request,
            actor_name=f"agent on {name}"[:150] if name else "agent", summary=f"refused an enrollment: {reason}",
            detail={"name": storable(name)[:200], "token": (secret or "")[:10]})
    raise EnrollmentRefused(reason, status=status)


def host_approve(*, host, user, request=None):
    """An admin lets a host that enrolled (and waits) report and take actions."""
    check_team_action(user, host.team, Action.ADMIN)
    if host.mode != HostMode.REPORT:
        raise ValidationError(f"{host} is polled over SSH: confirm its host key instead.")
    with transaction.atomic():
        if Host.objects.filter(pk=host.pk, approved_at__isnull=True).update(approved_at=timezone.now(),
                                                                          approved_by=user) != 1:
            host.refresh_from_db()
            return host
        _event(host, EventKind.ACTION, f"{user.username} approved the host: its reports are read from now on", user=user)
        portal_services.audit(action="hosts.approve", actor=user, team=host.team, obj=host, request=request,
                              summary=f"approved {host}, which reports in")
    host.refresh_from_db()
    return host


# --- Reports ---------------------------------------------------------------------------------------------------------


@dataclass
class AgentHost:
    """What the report path reads of a host: enough to authenticate it and to spot an unchanged status."""

    pk: int
    name: str
    team_id: int
    approved: bool
    state: str
    status_hash: str
    reachable: bool
    failures: int
    actions_waiting: bool
    credential_hash: str = ""


# One statement, written once: the report path runs it for every report, and the ORM would compile it every time.
AUTHENTICATE_SQL = f"""
    SELECT h.id, h.name, h.team_id, h.approved_at IS NOT NULL, h.state, h.status_hash, h.reachable, h.failures,
           EXISTS (SELECT 1 FROM {HostAction._meta.db_table} a JOIN {Run._meta.db_table} r ON r.id = a.run_id
                   WHERE a.host_id = h.id AND a.active AND r.status = %s)
    FROM {Host._meta.db_table} h WHERE h.agent_secret_hash = %s AND h.mode = %s"""  # nosec B608 - table names only


def agent_authenticate(secret):
    """The host whose credential this is (one indexed read, with whether an action waits for it), or None."""
    if not secret or not secret.startswith(HOST_SECRET_PREFIX):
        return None
    hashed = secret_hash(secret)
    with connection.cursor() as cursor:
        cursor.execute(AUTHENTICATE_SQL, [RunStatus.QUEUED.value, hashed, HostMode.REPORT.value])
        row = cursor.fetchone()
    if row is None:
        return None
    return AgentHost(*row[:3], bool(row[3]), *row[4:8], bool(row[8]), credential_hash=hashed)


@dataclass
class ReportResult:
    changed: bool
    state: str
    error: str = ""


STATES_THAT_REREAD = (HostState.NEW, HostState.UNREADABLE, HostState.UNREACHABLE, HostState.AUTH_FAILED,
                      HostState.HOST_KEY_CHANGED)


def is_current(*, state, reachable, failures):
    """Whether a host's next report with the same status would change nothing (else it is read again)."""
    return state not in STATES_THAT_REREAD and reachable and not failures


def host_report(*, agent, raw):
    """One status report. Unchanged: a hash compare and a mark in Redis. Changed: the poller's record_outcome. Either
    way the host's entry for the report front (`agentcache`) is written, or dropped when its next report must be read
    again."""
    status_hash = hashlib.sha256(raw).hexdigest() if raw else ""
    if status_hash and status_hash == agent.status_hash and is_current(state=agent.state, reachable=agent.reachable,
                                                                       failures=agent.failures):
        mark_seen(agent.pk)
        _front_remember(agent, status_hash, agent.state)
        return ReportResult(changed=False, state=agent.state)
    host = Host.objects.select_related("team", "last_action").get(pk=agent.pk)
    with transaction.atomic():
        record_outcome(host, PollOutcome(host.pk, raw=raw, exit_status=0, status_hash=status_hash))
    if is_current(state=host.state, reachable=host.reachable, failures=host.failures):
        _front_remember(agent, host.status_hash, host.state)
    else:
        agentcache.forget([host.pk])
    error = host.last_error if host.state == HostState.UNREADABLE else ""
    return ReportResult(changed=True, state=host.state, error=error)


def _front_remember(agent, status_hash, state):
    if agent.approved and agent.credential_hash:
        agentcache.remember(host_id=agent.pk, credential_hash=agent.credential_hash, status_hash=status_hash,
                            state=state, actions_waiting=agent.actions_waiting)


def host_report_unreadable(*, agent, raw, reason):
    """A report refused before parsing (too large): the host is marked "status unreadable" with the reason, and what
    it sent is kept (cut to the cap)."""
    host = Host.objects.select_related("team").get(pk=agent.pk)
    agentcache.forget([host.pk])
    _record_unreadable(host, raw, error_text=reason, now=timezone.now())


def mark_seen(host_id, now=None):
    """Remember that a host reported an unchanged status; `flush_last_seen` writes the marks in one UPDATE. Without
    Redis the host's row is updated at once."""
    now = now or time.time()
    try:
        client = redisconn.client(timeout=1)
        pipe = client.pipeline(transaction=False)
        pipe.hset(SEEN_KEY, str(host_id), str(now))
        pipe.set(FLUSH_LOCK_KEY, "1", nx=True, px=int(setting("HOSTS_AGENT_SEEN_FLUSH_SECONDS", 1.0) * 1000))
        _, flush_due = pipe.execute()
    except redis.RedisError as exc:
        log.warning("last-seen of host %s written directly, Redis did not answer: %s", host_id, exc)
        at = timezone.now()
        Host.objects.filter(pk=host_id).update(status_at=at, last_poll_at=at)
        return
    if flush_due:
        flush_last_seen(client=client)


def flush_last_seen(*, client=None):
    """Write every host marked seen since the last flush: one UPDATE. `mark_seen` and the report front call it when
    the lock in Redis (HOSTS_AGENT_SEEN_FLUSH_SECONDS) was free, so one report per interval does it; beat calls it
    too. Hosts among them whose row says their next report must be read again (marked offline meanwhile, deleted) lose
    their entry in the report front. Returns how many hosts it wrote."""
    client = client or redisconn.client(timeout=5)
    try:
        pending = f"{SEEN_KEY}:flushing:{secrets.token_hex(6)}"
        try:
            client.rename(SEEN_KEY, pending)
        except redis.ResponseError:
            return 0  # nothing marked
        marks = client.hgetall(pending)
        client.delete(pending)
    except redis.RedisError as exc:
        log.warning("last-seen marks not flushed, Redis did not answer: %s", exc)
        return 0
    if not marks:
        return 0
    ids = [int(key) for key in marks]
    at = timezone.now()
    Host.objects.filter(pk__in=ids, mode=HostMode.REPORT).update(status_at=at, last_poll_at=at)
    current = Host.objects.filter(pk__in=ids, mode=HostMode.REPORT, approved_at__isnull=False, reachable=True,
                                  failures=0).exclude(state__in=STATES_THAT_REREAD).values_list("pk", flat=True)
    agentcache.forget(set(ids) - set(current))
    return len(ids)


def agents_offline_sweep(*, now=None):
    """Hosts that report in and have missed HOSTS_AGENT_OFFLINE_AFTER_MISSED report intervals
    (HOSTS_AGENT_REPORT_SECONDS) go offline: state "unreachable", one timeline event (a flapping host's changes are
    folded into one: `poller.reachability_event`), and their entry in the report front dropped, so that their next
    report is read by the full path and brings them back ("reporting again"). The seen marks are written first, so a
    host that reported in the last second is not taken for offline. Beat runs it. Returns how many went offline."""
    flush_last_seen()
    now = now or timezone.now()
    missed = setting("HOSTS_AGENT_OFFLINE_AFTER_MISSED", 3)
    cutoff = now - timedelta(seconds=setting("HOSTS_AGENT_REPORT_SECONDS", 60) * missed)
    silent = Host.objects.filter(mode=HostMode.REPORT, approved_at__isnull=False, reachable=True,
                                 status_at__lt=cutoff).exclude(state=HostState.NEW)
    offline = []
    for host in silent.select_related("team", "stage"):
        reason = (f"No report since {host.status_at:%Y-%m-%d %H:%M:%S} UTC: the agent missed {missed} or more "
                  "reports (it stopped, or cannot reach the portal).")
        with transaction.atomic():
            if not Host.objects.filter(pk=host.pk, reachable=True, status_at__lt=cutoff).update(
                    reachable=False, failures=missed, state=HostState.UNREACHABLE, last_error=reason,
                    last_error_kind="offline"):
                continue  # it reported meanwhile
            host.reachable, host.failures, host.state, host.last_error = False, missed, HostState.UNREACHABLE, reason
            event = reachability_event(host, EventKind.UNREACHABLE, f"Offline: {reason}", at=now,
                                       detail={"kind": "offline", "last_report": host.status_at.isoformat()})
            if not event.detail.get("flaps"):  # a flap folded into its event is not news either
                notifications.notify(event=notifications.HostEventType.UNREACHABLE, host=host, extra={
                    "unreachable": {"error": reason, "error_kind": "offline", "failures": missed}})
        offline.append(host.pk)
    agentcache.forget(offline)
    return len(offline)


# --- Actions the agent carries out -----------------------------------------------------------------------------------


def agent_action_take(*, agent):
    """The action waiting for this host, now running (its run claimed), or None."""
    action = (HostAction.objects.filter(host_id=agent.pk, active=True, run__status=RunStatus.QUEUED)
              .select_related("run", "host").first())
    agentcache.action_waits(agent.pk, waiting=False)  # one action at a time: none waits once this one is taken
    if action is None or not runs.claim(action.run, phase="carried out by the host's agent"):
        return None
    Host.objects.filter(pk=agent.pk).update(last_action=action)
    sink = LogSink(action.run)
    sink.write(f"The agent on {agent.name} took the action; its output follows.")
    sink.close()
    return action


def _running_action(agent, action_id):
    action = (HostAction.objects.filter(pk=action_id, host_id=agent.pk).select_related("run", "host", "host__team")
              .first())
    if action is None:
        raise AgentError("No such action for this host.", status=404)
    if not action.active or action.run.status != RunStatus.RUNNING:
        raise AgentError("The action is not running (it ended, or was cancelled).", status=409)
    return action


def agent_action_log(*, agent, action_id, text):
    """Output the agent read so far from the action's command: appended to the run's log."""
    action = _running_action(agent, action_id)
    sink = LogSink(action.run)
    for line in storable(text).splitlines():
        sink.write(line)
    sink.close()
    portal_services.run_heartbeat(action.run)
    return action


def agent_action_finish(*, agent, action_id, exit_status, rebooting=False, output=""):
    """The agent reports how the action's command ended: the run ends (failed with the last line on a non-zero exit),
    and the host is released for the next action."""
    action = _running_action(agent, action_id)
    with runs.executing(action.run, what="the agent's action",
                        before_finish=lambda execution: _release(action, outcome=execution.reason)) as execution:
        sink = execution.sink
        for line in storable(output).splitlines():
            sink.write(line)
        if exit_status != 0:
            sink.write(f"exit status {exit_status}")
            raise runs.Failed(f"The command failed on the host with exit status {exit_status}.")
        if rebooting:
            sink.write(f"{agent.name} is rebooting; its next report shows what it booted.")
            execution.reason = "Done; the host is rebooting into the new deployment."
        else:
            execution.reason = "Done; the host reports its new status next."
    return action
