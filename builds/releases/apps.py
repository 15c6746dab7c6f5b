from django.apps import AppConfig

from portal import registry


class ReleasesConfig(AppConfig):
    name = "builds.releases"
    label = "releases"
    verbose_name = "Releases: stages and promotions"

    def ready(self):
        # Models load only once the app registry is ready, i.e. here.
        from . import metrics
        from .models import dashboard_counts
        from .policy import stages_ensure_default

        registry.dashboard_tiles(count=dashboard_counts, order=15, tiles=[
            registry.Tile("pending_promotions", "Waiting for approval", "arrow-up-right-circle",
                          "releases:promotion_list"),
        ])
        registry.dashboard_panel(template="releases/_dashboard_inbox.html", order=10)
        registry.team_setup(stages_ensure_default)
        registry.gauge(name="portal_promotions_waiting", documentation="Promotions waiting for approval, by team.",
                       labels=["team"], read=metrics.promotions_waiting)
