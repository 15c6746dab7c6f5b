"""What the supply chain tells people when an advisory feed's import finds advisories that did not affect an image
before the import (a new CVE for what runs, with no rebuild):

- `vulnerabilities.found`, for a digest a stage holds now: emailed to the team's approvers and admins;
- `vulnerabilities.running`, for a digest the team's hosts boot that none of its stages holds (hosts left behind on an
  older build, or that follow no stage): emailed to the team's operators and admins, who update those hosts.

Both go through the core's events (`portal.events`: stored, sent to the team's webhooks subscribed to them), and are
registered in builds.supplychain.apps with their JSON Schemas in builds/supplychain/event_schemas/. Which digests
hosts boot is asked of the app that knows the fleet (`RUNNING_DIGESTS`, which hosts answers): builds never imports it.

`findings()` is read before and after the import, in its transaction; `notify_new_findings(...)` emits, per team, one
event of each kind with what is new. Nothing is emitted for a team that gained nothing, or for an import that rolled
back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.urls import reverse

from builds.models import Build, ImageDefinition
from builds.releases.gate import current_entries
from builds.releases.models import Stage
from portal import events, notifications
from portal.formatting import short_digest
from portal.models import Action, Event, Team
from portal.notifications import site_url
from portal.registry import providers

from . import vulns

FOUND = "vulnerabilities.found"
RUNNING = "vulnerabilities.running"
# Asked of the app that knows the fleet: function() -> {(team id, digest): how many of the team's hosts boot it}.
RUNNING_DIGESTS = "supplychain.running_digests"
LISTED = 20  # advisories named in the email per stage or digest; the event's data holds them all


@dataclass
class Findings:
    """What the advisories find, at one moment, in what the stages hold and in what the hosts boot."""

    stages: dict  # stage_findings()
    running: dict  # running_findings(stages)


def findings() -> Findings:
    stages = stage_findings()
    return Findings(stages=stages, running=running_findings(stages))


def stage_findings() -> dict[tuple[int, int], tuple]:
    """{(stage id, definition id): (the stage's current entry, {(advisory id, package): Finding})} for every stage of
    every team that holds a build now. Each build's findings are read once, however many stages hold it."""
    found = {}
    by_build: dict[int, dict] = {}
    for team in Team.objects.filter(stages__isnull=False).distinct():
        stages = {stage.pk: stage for stage in Stage.objects.filter(team=team).select_related("team")}
        definitions = {d.pk: d for d in ImageDefinition.objects.filter(team=team).select_related("team")}
        for key, entry in current_entries(stages.values(), definitions.values()).items():
            if entry.build is None:
                continue
            entry.stage, entry.definition = stages[entry.stage_id], definitions[entry.definition_id]
            if entry.build_id not in by_build:
                by_build[entry.build_id] = {(f.advisory.identifier, f.package): f for f in vulns.findings_for(entry.build)}
            found[key] = (entry, by_build[entry.build_id])
    return found


def running_findings(stages: dict) -> dict[tuple[int, str], tuple]:
    """{(team id, digest): (build, hosts, {(advisory id, package): Finding})} for each digest a team's hosts boot that
    is one of the team's builds and that none of its stages holds (`stages`: stage_findings()). A stage that holds a
    manifest list holds its members too: bootc boots the member of the host's architecture. Hosts count only for
    builds of their own team."""
    hosts: dict[tuple[int, str], int] = defaultdict(int)
    for provider in providers(RUNNING_DIGESTS):
        for key, count in provider().items():
            hosts[key] += count
    held = {(entry.stage.team_id, entry.digest) for entry, _ in stages.values()}
    team_of_list = {entry.build_id: entry.stage.team_id for entry, _ in stages.values() if entry.build.is_manifest_list}
    held |= {(team_of_list[list_id], digest) for list_id, digest in
             Build.objects.filter(manifest_list__in=list(team_of_list)).values_list("manifest_list_id", "digest")}
    wanted = {key for key, count in hosts.items() if count > 0 and key not in held}
    if not wanted:
        return {}
    found = {}
    builds = (Build.objects.filter(digest__in={digest for _, digest in wanted})
              .select_related("definition__team").order_by("-pk"))  # the newest build of a digest stands for it
    for build in builds:
        key = (build.definition.team_id, build.digest)
        if key in wanted and key not in found:
            found[key] = (build, hosts[key], {(f.advisory.identifier, f.package): f for f in vulns.findings_for(build)})
    return found


def notify_new_findings(*, before: Findings, after: Findings, feed, actor=None) -> list[Event]:
    """Per team, one `vulnerabilities.found` for its stages' digests and one `vulnerabilities.running` for the digests
    its hosts boot that no stage holds, each listing only the advisories `after` finds that `before` did not."""
    emitted = _notify_stages(before.stages, after.stages, feed, actor)
    return emitted + _notify_running(before.running, after.running, feed, actor)


def _new(before: dict, key, findings: dict) -> list:
    known = before[key][-1] if key in before else {}
    return [finding for name, finding in findings.items() if name not in known]


def _notify_stages(before, after, feed, actor) -> list[Event]:
    per_team = defaultdict(list)
    for key, (entry, findings) in after.items():
        if new := _new(before, key, findings):
            per_team[entry.stage.team_id].append((entry, new))
    emitted = []
    for team in Team.objects.filter(pk__in=per_team).order_by("slug"):
        stages = sorted(per_team[team.pk], key=lambda pair: (pair[0].definition.name, pair[0].stage.position))
        data = {"feed": feed.name, "stages": [_stage(entry, new) for entry, new in stages]}
        emitted.append(_emit(FOUND, team, data, _email(team, data), Action.APPROVE, feed, actor))
    return emitted


def _notify_running(before, after, feed, actor) -> list[Event]:
    per_team = defaultdict(list)
    for (team_id, digest), (build, hosts, findings) in after.items():
        if new := _new(before, (team_id, digest), findings):
            per_team[team_id].append((build, hosts, new))
    emitted = []
    for team in Team.objects.filter(pk__in=per_team).order_by("slug"):
        rows = sorted(per_team[team.pk], key=lambda row: (-row[1], str(row[0].definition), row[0].number))
        data = {"feed": feed.name, "digests": [_running(build, hosts, new) for build, hosts, new in rows]}
        emitted.append(_emit(RUNNING, team, data, _running_email(team, data), Action.OPERATE, feed, actor))
    return emitted


def _emit(kind, team, data, email, action, feed, actor) -> Event:
    """The event `kind` about `feed`, emailed (`email`: subject and body) to the team's members who may do `action`."""
    subject, body = email
    return events.emit(
        type=kind, team=team, data=data, actor=actor,
        subject=events.Subject(kind="advisory_feed", id=feed.pk, name=f"advisory feed {feed.name}",
                               path=reverse("supplychain:advisories")),
        recipients=set(notifications.members_with(team, action)), email_subject=subject, email_body=body)


def _stage(entry, new) -> dict:
    return {"stage": entry.stage.name, **_build_and_advisories(entry.definition, entry.digest, entry.build, new)}


def _running(build, hosts, new) -> dict:
    return {"hosts": hosts, **_build_and_advisories(build.definition, build.digest, build, new)}


def _build_and_advisories(definition, digest, build, new) -> dict:
    return {
        "definition": {"id": definition.pk, "name": str(definition), "repository": definition.repository},
        "digest": digest,
        "build": {"id": build.pk, "number": build.number,
                  "url": site_url(reverse("supplychain:build", args=[build.pk]) + "#vulnerabilities")},
        "advisories": [{"id": f.advisory.identifier, "cves": f.advisory.cves, "severity": f.advisory.severity,
                        "summary": f.advisory.summary, "package": f.package, "installed": f.installed,
                        "fixed": f.fixed or None,
                        "url": site_url(reverse("supplychain:advisory_detail", args=[f.advisory.identifier]))}
                       for f in new],
    }


def _email(team, data) -> tuple[str, str]:
    count = len({a["id"] for stage in data["stages"] for a in stage["advisories"]})
    where = ", ".join(sorted({stage["stage"] for stage in data["stages"]}))
    subject = (f"{count} new {'advisory' if count == 1 else 'advisories'} for what {team.name}'s stages hold "
               f"({where})")
    lines = [f"The advisory feed {data['feed']} now lists vulnerabilities in digests {team.name}'s stages hold, which "
             "it did not before. Nothing was rebuilt: the same images, newly known to be affected.", ""]
    for stage in data["stages"]:
        lines.append(f"{stage['definition']['name']} in {stage['stage']} ({short_digest(stage['digest'])}):")
        lines += _advisory_lines(stage)
    return subject, "\n".join(lines)


def _running_email(team, data) -> tuple[str, str]:
    count = len({a["id"] for row in data["digests"] for a in row["advisories"]})
    hosts = sum(row["hosts"] for row in data["digests"])
    subject = (f"{count} new {'advisory' if count == 1 else 'advisories'} for {hosts} of {team.name}'s hosts on an "
               "image no stage holds")
    lines = [f"The advisory feed {data['feed']} now lists vulnerabilities in digests {team.name}'s hosts boot, which "
             "none of the team's stages holds: the hosts are behind their stage, or follow none. Updating them to "
             "what their stage holds, or rolling a newer build out, takes them off these images.", ""]
    for row in data["digests"]:
        lines.append(f"{row['definition']['name']} build {row['build']['number']} ({short_digest(row['digest'])}), "
                     f"booted by {row['hosts']} host{'s' if row['hosts'] != 1 else ''}:")
        lines += _advisory_lines(row)
    return subject, "\n".join(lines)


def _advisory_lines(row) -> list[str]:
    lines = []
    for advisory in row["advisories"][:LISTED]:
        fixed = f", fixed in {advisory['fixed']}" if advisory["fixed"] else ", no fix yet"
        lines.append(f"  {advisory['severity']}: {advisory['id']} in {advisory['package']} "
                     f"{advisory['installed']}{fixed}")
    if len(row["advisories"]) > LISTED:
        lines.append(f"  and {len(row['advisories']) - LISTED} more")
    return [*lines, f"  {row['build']['url']}", ""]
