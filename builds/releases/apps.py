from pathlib import Path

from django.apps import AppConfig

from portal import registry


class ReleasesConfig(AppConfig):
    name = "builds.releases"
    label = "releases"
    verbose_name = "Releases: stages and promotions"

    def ready(self):
        # Models load only once the app registry is ready, i.e. here.
        from . import metrics
        from .models import PromotionEvent, dashboard_counts, lands_on_inbox
        from .policy import stages_ensure_default

        registry.dashboard_tiles(count=dashboard_counts, order=15, tiles=[
            registry.Tile("pending_promotions", "Waiting for approval", "arrow-up-right-circle",
                          "releases:promotion_list"),
        ])
        # The REST API's routers for stages, promotions and rollbacks (portal/api.py mounts them under /api/v1/),
        # imported when the URLconf loads.
        registry.api_router("stages/", "builds.releases.api.stages", order=60)
        registry.api_router("promotions/", "builds.releases.api.promotions", order=61)
        registry.api_router("rollbacks/", "builds.releases.api.rollbacks", order=62)
        registry.dashboard_panel(template="releases/_dashboard_inbox.html", order=10)
        registry.team_setup(stages_ensure_default)
        registry.landing(url_name="releases:promotion_list", query="view=inbox", applies=lands_on_inbox, order=20)
        registry.gauge(name="portal_promotions_waiting", documentation="Promotions waiting for approval, by team.",
                       labels=["team"], read=metrics.promotions_waiting)
        registry.fragment("definition.stages", url_name="releases:stages_of_definition")
        registry.fragment("build.stages", url_name="releases:stages_of_build")
        # Image retention (builds.retention) keeps what the stages hold and held, and open promotions' digests.
        from .keepers import digests_in_use

        registry.digest_keeper(name="stages and promotions", function=digests_in_use, order=10)
        for kind, label in PromotionEvent.choices:
            registry.notification_event(kind, label, schema=str(Path(__file__).parent / "event_schemas" / f"{kind}.v1.json"))
