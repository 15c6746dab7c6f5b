"""Formatting for host pages: short digests, state badges, ages. Display only."""

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
def short_digest(digest):
    if not digest:
        return ""
    return digest.removeprefix("sha256:")[:12]


@register.filter
def state_icon(state):
    return STATE_ICONS.get(state, "circle")


@register.filter
def event_icon(kind):
    return EVENT_ICONS.get(kind, "dot")


@register.filter
def age(when):
    """'12 s', '4 min', '3 h', '2 d' since `when`."""
    if not when:
        return ""
    seconds = max(int((timezone.now() - when).total_seconds()), 0)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


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


@register.filter
def lookup(mapping, key):
    """mapping[key], or None (for the build behind a digest)."""
    return mapping.get(key) if mapping else None
