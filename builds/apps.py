from pathlib import Path

from django.apps import AppConfig

from portal import registry


class BuildsConfig(AppConfig):
    name = "builds"
    verbose_name = "Images and builds"

    def ready(self):
        # Models load only once the app registry is ready, i.e. here.
        from portal.models import Action, RunKind

        from . import metrics
        from .models import BuildEvent, dashboard_counts
        from .services import build_retry_run

        registry.dashboard_tiles(count=dashboard_counts, order=10, tiles=[
            registry.Tile("definitions", "Image definitions", "box-seam", "builds:definition_list"),
            registry.Tile("builds", "Builds", "hammer", "builds:build_list"),
        ])
        registry.dashboard_run_list(label="All builds", url_name="builds:build_list", order=10)
        registry.team_link(label="Registry logins, API tokens and webhooks", icon="plug", url_name="builds:integrations",
                           action=Action.ADMIN, order=10)
        for kind, label in BuildEvent.choices:
            registry.notification_event(kind, label, schema=str(Path(__file__).parent / "event_schemas" / f"{kind}.v1.json"))
        # /metrics (portal.metrics): builder load, and the builders' queues.
        registry.gauge(name="portal_builder_capacity", documentation="Runs an enabled builder takes at once.",
                       labels=["builder", "architecture"], read=metrics.builder_capacity)
        registry.gauge(name="portal_builder_running", documentation="Runs on a builder now, by the work they do.",
                       labels=["builder", "work"], read=metrics.builder_running_builds)
        registry.queues(metrics.builder_queues)
        # Definitions whose image retention applies itself are cleaned up in the core's daily pass.
        from .cleanup import scheduled_cleanups

        registry.retention_step(name="images", label="images queued for deletion", function=scheduled_cleanups,
                                order=30)
        # The Retry button of a build page posts to the core's portal:run_retry (cancelling is the core's own).
        registry.run_retry(kind=RunKind.BUILD, retry=build_retry_run, action=Action.DEVELOP)
        # Cancelling a manifest list cancels the builds of its architectures.
        from portal.services import RUN_CANCEL_REQUESTED

        from .multiarch import members_cancel

        registry.subscribe(RUN_CANCEL_REQUESTED, members_cancel)
        # The REST API's routers (/api/v1/definitions/, /api/v1/builds/), imported when the URLconf loads.
        registry.api_router("definitions/", "builds.api.definitions", order=10)
        registry.api_router("builds/", "builds.api.builds", order=11)
