from pathlib import Path

from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate

from portal import registry


class HostsConfig(AppConfig):
    name = "hosts"
    verbose_name = "Hosts"

    def ready(self):
        # After migrate and after a flush (tests), count the tallies again from the hosts: a flush deletes hosts row by
        # row on SQLite, which the tally triggers record, and nothing else may leave them off.
        post_migrate.connect(_recount_tallies, sender=self)

        # Models load only once the app registry is ready, i.e. here.
        from builds.releases.apply import PROMOTION_APPLIED
        from portal.models import Action, RunKind

        from . import metrics
        from .models import dashboard_counts, lands_on_host_search
        from .retention import thin_snapshots
        from .services import promotion_applied

        registry.dashboard_tiles(count=dashboard_counts, order=20, across_teams=True, tiles=[
            registry.Tile("hosts", "Hosts", "hdd-network", "hosts:host_list"),
            registry.Tile("hosts_drifting", "Hosts drifting", "exclamation-triangle", "hosts:host_drift"),
        ])
        registry.dashboard_run_list(label="All hosts", url_name="hosts:host_list", order=20, across_teams=True)
        registry.lean_path("/agent/v1/")  # hosts' agents: their own credential, thousands of reports a minute
        from .agent_front import AgentFront

        registry.http_front(AgentFront)  # unchanged status reports answered from Redis, before Django's request cycle
        registry.team_link(label="Hosts that report in: enrollment tokens and approvals", icon="broadcast",
                           url_name="hosts:enrollment", action=Action.ADMIN, order=30)
        registry.landing(url_name="hosts:host_list", applies=lands_on_host_search, order=10)
        # Operators stop what runs on hosts, as they start it.
        for kind in (RunKind.HOST_ACTION, RunKind.HOST_POLL, RunKind.ROLLOUT):
            registry.run_cancel(kind=kind, action=Action.OPERATE)
        # The REST API's routers for hosts, their timelines and actions (portal/api.py mounts them under /api/v1/),
        # imported when the URLconf loads.
        registry.api_router("hosts/", "hosts.api.hosts", order=70)
        registry.api_router("host-actions/", "hosts.api.host_actions", order=71)
        registry.subscribe(PROMOTION_APPLIED, promotion_applied)
        # The supply chain tells operators of new advisories for digests their hosts boot that no stage holds.
        from builds.supplychain.notifications import RUNNING_DIGESTS

        from .tallies import running_digests

        registry.provide(RUNNING_DIGESTS, running_digests)
        from .notifications import HostEventType

        for kind, label in HostEventType.choices:
            registry.notification_event(kind, label, schema=str(Path(__file__).parent / "event_schemas" / f"{kind}.v1.json"))
        # Who runs this image, on the builds and release pages (hosts/fragments.py).
        registry.fragment("definition.hosts", url_name="hosts:hosts_of_definition")
        registry.fragment("definition.following", url_name="hosts:hosts_following_definition")
        registry.fragment("build.hosts", url_name="hosts:hosts_of_build")
        registry.fragment("promotion.hosts", url_name="hosts:hosts_of_promotion")
        registry.fragment("stage.hosts", url_name="hosts:hosts_of_stage")
        # The release map (hosts/releasemap.py): a panel of the dashboard, and a fragment of the definition page.
        registry.dashboard_panel(template="hosts/_dashboard_release_map.html", order=50)
        registry.fragment("definition.release_map", url_name="hosts:release_map_of_definition")
        # /metrics (portal.metrics): hosts per state and the poller's lag.
        registry.gauge(name="portal_hosts", documentation="Hosts in each state, over every team.", labels=["state"],
                       read=metrics.hosts_per_state)
        registry.gauge(name="portal_hosts_drifting", documentation="Hosts that boot a digest other than their stage's.",
                       read=metrics.hosts_drifting)
        registry.gauge(name="portal_hosts_oldest_status_age_seconds",
                       documentation="Poll lag: age of the oldest status of a reachable host with a confirmed key.",
                       read=metrics.oldest_status_age)
        registry.gauge(name="portal_hosts_poll_overdue_seconds",
                       documentation="How late the most overdue host poll is (0 when the poller keeps up).",
                       read=metrics.poll_overdue)
        # Unchanged repeats of old snapshots are thinned by the core's retention pass (hosts/retention.py).
        # Image retention (builds.retention) keeps every digest a host boots, has staged or keeps as rollback.
        from .keepers import digests_in_use

        registry.digest_keeper(name="hosts", function=digests_in_use, order=30)
        registry.retention_step(name="host_snapshots", label="host snapshots thinned", function=thin_snapshots,
                                order=20)


def _recount_tallies(sender, using="default", **kwargs):
    from . import services  # models load only once the app registry is ready, after this module

    if "hosts_hosttally" in connections[using].introspection.table_names():
        services.tallies_recount(using=using)
