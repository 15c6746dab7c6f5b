"""Every state change of the hosts inventory and trust, written once (actions: `hosts.actions`; polls and
timelines: `hosts.poller`; drift: `hosts.drift`).

Views, tasks, management commands (and later the API) call these functions. Each checks access when given an actor,
writes, audits in the same transaction, and enqueues work after commit.
"""

import csv
import io
import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction
from django.utils import timezone

from builds import services as build_services
from builds.models import Build
from portal import egress, ssh
from portal import services as portal_services
from portal.access import check_team_action
from portal.models import Action, RunStatus
from portal.text import storable

from . import agentcache, foldback
from .connect import NAME_MAX, HostError, _jump_target
from .drift import reference_digests_set, refresh_expected
from .models import (
    DriftInRollouts,
    EventKind,
    Host,
    HostAction,
    HostMode,
    HostRuntime,
    HostState,
    JumpHost,
    RuntimeDrift,
    RuntimePolicy,
    TeamSSHKey,
)
from .poller import _enqueue_key_fetch, _enqueue_poll, _event

log = logging.getLogger(__name__)


def promotion_applied(*, reference, digest, architecture="", digests=None):
    """Releases announce an applied promotion (portal.registry): hosts that track the stage tag now expect its digest
    (drift is judged against it) without waiting for the next resolution of the tag. A manifest list comes with each
    architecture's digest, which is what a host of that architecture boots (bootc reports its own entry's digest)."""
    expected = {"": digest, **(digests or {})}
    if architecture and not digests:
        expected[architecture] = digest
    reference_digests_set(reference=reference, digests=expected, source="promotion")


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
            refresh_expected([host])
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
        if host.reports_in:
            host_id = host.pk
            transaction.on_commit(lambda: agentcache.forget([host_id]))  # its credential stops at the report front
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
    for host in Host.objects.filter(pk__in=host_ids, host_key="", mode=HostMode.SSH).select_related("jump_host"):
        try:
            host_fetch_key(host=host)
            fetched += 1
        except HostError:
            continue
    return fetched


# --- Folding runtime changes back into the image ---------------------------------------------------------------------


class FoldBackError(Exception):
    """Why no revision can be proposed from a host's runtime changes (said to the developer as is)."""


def runtime_proposal(*, host, user):
    """(definition, its current revision, foldback.Proposal) for what changed on `host`, on top of the current
    revision of the definition the portal built the host's booted digest from. The user must be one of the team's
    developers."""
    build = (Build.objects.filter(digest=host.booted_digest).select_related("definition", "definition__team")
             .order_by("-pk").first() if host.booted_digest else None)
    if build is None:
        raise FoldBackError(f"The portal did not build the image {host} boots, so it has no definition to add to.")
    definition = build.definition
    check_team_action(user, definition.team, Action.DEVELOP)
    runtime = HostRuntime.objects.filter(host=host).first()
    if runtime is None or not runtime.has_changes:
        raise FoldBackError(f"Nothing changed on {host} since it booted its image, as last read.")
    current = definition.revisions.order_by("-number").first()
    proposal = foldback.propose(
        runtime, host_name=host.name, containerfile=current.containerfile, context_kind=current.context_kind,
        context_files={f.path: bytes(f.content) for f in current.context_files.all()},
        package_format=build.package_format or "rpm")
    return definition, current, proposal


def runtime_fold_back(*, host, user, reviewed_sha256, request=None):
    """Save the proposed revision, if it is still the one the developer reviewed (`reviewed_sha256`, of its
    Containerfile and based on the same current revision): a reading or a revision saved meanwhile would change it.
    Goes through builds' revision_create (validation, numbering, audit); returns the new Revision."""
    definition, current, proposal = runtime_proposal(host=host, user=user)
    if not proposal.changes_anything:
        raise FoldBackError("Nothing of what changed on the host can be folded back; see what was left out and why.")
    if foldback.proposal_sha256(proposal, current) != reviewed_sha256:
        raise FoldBackError("The proposal changed since you looked at it (a new reading, or a new revision): "
                            "review it again.")
    return build_services.revision_create(
        definition=definition, user=user, containerfile=proposal.containerfile, request=request,
        message=f"Fold back what changed on {host.name}"[:500], context_kind=proposal.context_kind,
        git_url=current.git_url, git_ref=current.git_ref, git_subdir=current.git_subdir,
        context_files=proposal.context_files if proposal.context_kind == "files" else None)


# --- Tallies ---------------------------------------------------------------------------------------------------------


TALLIES = {"hosts_hosttally": "team_id, stage_id, state, drifting, update_available, enforcing",
           "hosts_digesttally": "team_id, booted_image, booted_digest, booted_version, architecture"}
# How a host row gives each tally's key (the triggers of migrations 0002, 0006 and 0010 say the same).
TALLY_FROM_HOST = {"hosts_hosttally": "team_id, stage_id, state, drifting, (update_digest <> '' AND staged_digest = ''), "
                                      "(booted_signature = 'containerPolicy')",
                   "hosts_digesttally": TALLIES["hosts_digesttally"]}


def runtime_policy_set(*, stage, user, drift, rollouts=DriftInRollouts.SKIP, request=None):
    """What `stage` says of hosts changed at runtime (team admins): allowed, warned or forbidden, and what a rollout
    does with a non-compliant host. Audited with what it was before."""
    check_team_action(user, stage.team, Action.ADMIN)
    if drift not in RuntimeDrift.values:
        raise ValidationError({"drift": "Pick allowed, warned or forbidden."})
    if rollouts not in DriftInRollouts.values:
        raise ValidationError({"rollouts": "Pick skip or update anyway."})
    with transaction.atomic():
        policy, _ = RuntimePolicy.objects.select_for_update().get_or_create(stage=stage)
        before = {"drift": policy.drift, "rollouts": policy.rollouts}
        policy.drift, policy.rollouts, policy.updated_at, policy.updated_by = drift, rollouts, timezone.now(), user
        policy.save()
        portal_services.audit(action="hosts.runtime_policy", summary=f"runtime changes on {stage}: {drift}"
                              + (f" (rollouts: {rollouts})" if drift == RuntimeDrift.FORBIDDEN else ""),
                              actor=user, team=stage.team, obj=policy, request=request,
                              detail={"before": before, "after": {"drift": drift, "rollouts": rollouts}})
    return policy


def tallies_recount(using="default"):
    """Count the tallies again from the hosts themselves (after migrate or a flush; also a repair)."""
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        for table, key in TALLIES.items():
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608  # nosec B608 - fixed table names (TALLIES)
            where = "WHERE booted_digest <> ''" if table == "hosts_digesttally" else ""
            groups = ", ".join(str(i + 1) for i in range(len(key.split(", "))))
            cursor.execute(f"INSERT INTO {table} ({key}, n) SELECT {TALLY_FROM_HOST[table]}, COUNT(*) "  # noqa: S608  # nosec B608
                           f"FROM hosts_host {where} GROUP BY {groups}")


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

