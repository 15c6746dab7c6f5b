"""Host pages' own filters: state and event icons, stale statuses, bootc's timestamps (digests, durations and ages
come from the `formatting` library)."""

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()

STATE_ICONS = {
    "host_key_changed": "shield-exclamation", "unreachable": "wifi-off", "auth_failed": "key", "unreadable": "file-earmark-x",
    "not_bootc": "dash-circle", "rolled_back": "arrow-counterclockwise", "update_staged": "hourglass-split",
    "drift": "exclamation-triangle", "up_to_date": "check-circle", "running": "circle", "new": "question-circle",
}

EVENT_ICONS = {
    "first_seen": "eye", "update_available": "cloud-arrow-down", "staged": "download", "unstaged": "x-circle",
    "booted": "power", "rolled_back": "arrow-counterclockwise", "rollback_queued": "arrow-return-left",
    "rollback_cancelled": "arrow-return-right", "switched": "shuffle", "pinned": "pin-angle", "unpinned": "pin",
    "unreachable": "wifi-off", "reachable": "wifi", "host_key_changed": "shield-exclamation",
    "host_key_confirmed": "shield-check", "unreadable": "file-earmark-x", "action": "person-gear",
}



@register.filter
def state_icon(state):
    return STATE_ICONS.get(state, "circle")


@register.filter
def event_icon(kind):
    return EVENT_ICONS.get(kind, "dot")



@register.filter
def stale(when, seconds=300):
    """True when `when` is older than `seconds` (the status is getting old)."""
    if not when:
        return True
    return (timezone.now() - when).total_seconds() > int(seconds)


@register.filter
def when(timestamp):
    """An RFC 3339 timestamp from bootc as `2026-01-01 09:14 UTC` (bootc's own text when it does not parse)."""
    if not timestamp:
        return "—"
    try:
        moment = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.utcoffset() is not None and not moment.utcoffset() else "")
