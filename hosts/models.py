"""Hosts, their bootc status snapshots, timelines and actions (filled in by the hosts issue)."""


def dashboard_counts(user, teams):
    """Counts for the dashboard tiles, over `teams` (already limited to what the user may see)."""
    return {"hosts": 0, "hosts_drifting": 0}
