"""What hosts tell `/metrics` (registered in `HostsConfig.ready` through `portal.registry.gauge`), read at scrape time."""

from django.db.models import Min, Sum
from django.utils import timezone

from .models import Host, HostState
from .tallies import HostTally


def hosts_per_state():
    """{(state,): hosts} over every team, from the maintained tally (no count over the hosts table)."""
    counts = dict.fromkeys(HostState.values, 0)
    for row in HostTally.objects.values("state").order_by().annotate(n=Sum("n")):
        counts[row["state"]] = row["n"]
    return {(state,): n for state, n in counts.items()}


def hosts_drifting():
    return {(): HostTally.objects.filter(drifting=True).aggregate(n=Sum("n"))["n"] or 0}


def oldest_status_age():
    """Poll lag: seconds since the oldest status of a host the poller reaches (confirmed key, reachable). Unreachable
    hosts wait out their backoff and are counted by state instead; 0 when there is no such host."""
    oldest = (Host.objects.exclude(host_key="").filter(reachable=True, status_at__isnull=False)
              .aggregate(oldest=Min("status_at"))["oldest"])
    return {(): (timezone.now() - oldest).total_seconds() if oldest else 0.0}


def poll_overdue():
    """Seconds the most overdue poll is late: how far the poller is behind its schedule (0 when it keeps up)."""
    due = Host.objects.due().aggregate(oldest=Min("next_poll_at"))["oldest"]
    return {(): max(0.0, (timezone.now() - due).total_seconds()) if due else 0.0}
