"""Host pages' own filters: state and event icons, stale statuses, bootc's timestamps (digests, durations and ages
come from the `formatting` library)."""

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

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



# States whose badge also says "drift" when the host drifts (the others say it themselves or cannot tell).
DRIFT_SHOWN_WITH = {"rolled_back", "unreachable", "auth_failed", "unreadable", "host_key_changed"}


@register.simple_tag
def state_badge(host):
    """A host's state badge (and its drift badge), the same on every page that lists hosts. A tag, not an include:
    the host list draws fifty of them per page, and an include costs a template context of its own each time."""
    badge = format_html('<span class="badge host-state host-state-{}" title="{}"><i class="bi bi-{}"></i> {}</span>',
                        host.state, host.state_help(), state_icon(host.state), host.get_state_display())
    if host.drifting and host.state in DRIFT_SHOWN_WITH:
        badge += format_html(' <span class="badge host-state host-state-drift" title="Boots another digest than its '
                             'stage holds"><i class="bi bi-exclamation-triangle"></i> drift</span>')
    return badge


@register.filter
def status_time(when):
    """`when` as "2026-01-01 09:14:05 UTC" in the portal's time zone: `date:'Y-m-d H:i:s T'`, for a fraction of its
    cost (the host list shows fifty)."""
    return timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S %Z") if when else ""


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
