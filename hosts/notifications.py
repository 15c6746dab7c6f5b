"""What hosts tell people: their events (host.drift, host.rollback, host.unreachable), composed here and emitted
through the core's events (`portal.events`: stored, sent to signed outbound webhooks; the kinds are registered in
hosts.apps with their JSON Schemas in hosts/event_schemas/).

Each is emitted on the change, never on every poll: a host that starts drifting (it boots a digest other than what
its stage tag resolves to), a rollback recorded on its timeline (greenboot's or an operator's, after the reboot), and
a host that was reachable and stopped answering. Called inside the transaction that records the change.
"""

from __future__ import annotations

from django.db import models

from portal import events
from portal.models import Event

from .models import Host


class HostEventType(models.TextChoices):
    DRIFT = "host.drift", "Host drifts from its stage"
    ROLLBACK = "host.rollback", "Host rolled back"
    UNREACHABLE = "host.unreachable", "Host became unreachable"


def notify(*, event: HostEventType, host: Host, extra: dict | None = None) -> Event:
    return events.emit(type=HostEventType(event).value, team=host.team, data={**_data(host), **(extra or {})},
                       subject=events.Subject(kind="host", id=host.pk, name=host.name, path=host.get_absolute_url(),
                                              api_path=f"/api/v1/hosts/{host.pk}/"))


def notify_drift_started(hosts_before: dict[int, bool], hosts) -> int:
    """Emit host.drift for each of `hosts` that drifts now and did not (`hosts_before`: {pk: drifting before})."""
    sent = 0
    for host in hosts:
        if host.drifting and not hosts_before.get(host.pk, False):
            notify(event=HostEventType.DRIFT, host=host)
            sent += 1
    return sent


def _data(host) -> dict:
    return {
        "address": host.address,
        "state": host.state,
        "stage": host.stage.name if host.stage_id else None,
        "reference": host.reference or None,
        "booted_digest": host.booted_digest or None,
        "booted_version": host.booted_version or None,
        "expected_digest": host.expected_digest or None,
    }
