"""What the supply chain tells people: `vulnerabilities.found`, when an advisory feed's import finds advisories that
affect a digest a stage holds now and did not affect it before the import (a new CVE for what runs in prod, with no
rebuild). Emitted through the core's events (`portal.events`: stored, sent to the team's webhooks subscribed to it,
emailed to the team's approvers and admins); the kind is registered in builds.supplychain.apps with its JSON Schema in
builds/supplychain/event_schemas/.

`stage_findings()` is read before and after the import, in its transaction; `notify_new_findings(...)` emits one event
per team with what is new. Nothing is emitted for a team whose stages gained nothing, or for an import that rolled back.
"""

from __future__ import annotations

from collections import defaultdict

from django.urls import reverse

from builds.models import ImageDefinition
from builds.releases.gate import current_entries
from builds.releases.models import Stage
from portal import events, notifications
from portal.formatting import short_digest
from portal.models import Action, Event, Team
from portal.notifications import site_url

from . import vulns

FOUND = "vulnerabilities.found"
LISTED = 20  # advisories named in the email per stage; the event's data holds them all


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


def notify_new_findings(*, before: dict, after: dict, feed, actor=None) -> list[Event]:
    """One `vulnerabilities.found` per team whose stages hold a digest that `after` finds advisories for that `before`
    did not."""
    per_team = defaultdict(list)
    for key, (entry, findings) in after.items():
        known = before.get(key, (None, {}))[1]
        new = [finding for name, finding in findings.items() if name not in known]
        if new:
            per_team[entry.stage.team_id].append((entry, new))
    emitted = []
    for team in Team.objects.filter(pk__in=per_team).order_by("slug"):
        stages = sorted(per_team[team.pk], key=lambda pair: (pair[0].definition.name, pair[0].stage.position))
        data = {"feed": feed.name, "stages": [_stage(entry, new) for entry, new in stages]}
        subject, body = _email(team, data)
        emitted.append(events.emit(
            type=FOUND, team=team, data=data, actor=actor,
            subject=events.Subject(kind="advisory_feed", id=feed.pk, name=f"advisory feed {feed.name}",
                                   path=reverse("supplychain:advisories")),
            recipients=set(notifications.members_with(team, Action.APPROVE)), email_subject=subject, email_body=body))
    return emitted


def _stage(entry, new) -> dict:
    build = entry.build
    return {
        "stage": entry.stage.name,
        "definition": {"id": entry.definition_id, "name": str(entry.definition),
                       "repository": entry.definition.repository},
        "digest": entry.digest,
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
        for advisory in stage["advisories"][:LISTED]:
            fixed = f", fixed in {advisory['fixed']}" if advisory["fixed"] else ", no fix yet"
            lines.append(f"  {advisory['severity']}: {advisory['id']} in {advisory['package']} "
                         f"{advisory['installed']}{fixed}")
        if len(stage["advisories"]) > LISTED:
            lines.append(f"  and {len(stage['advisories']) - LISTED} more")
        lines += [f"  {stage['build']['url']}", ""]
    return subject, "\n".join(lines)
