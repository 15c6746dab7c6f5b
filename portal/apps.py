import atexit
import gc
from pathlib import Path

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.core import checks
from prometheus_client import REGISTRY

from .ratelimit import check_rates


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal core"

    def ready(self):
        from . import celery  # noqa: F401 - the Celery app, before any task is sent (shared_task binds to it)

        # A process that ends (manage.py, daphne, a worker, beat, pytest) spends its last CPU in the interpreter's
        # final full collections, which gc.disable() does not stop: each walks every object Django, the libraries and
        # the portal loaded, some 0.3-0.5 s of CPU per process here. Frozen, those objects are left to the exit, as
        # os._exit would leave them; atexit handlers, flushes and freeing by reference count happen as before.
        atexit.register(gc.freeze)

        checks.register(check_rates)
        # The portal's own metrics, read at each scrape (models load only once the app registry is ready, i.e. here).
        from .metrics import PortalCollector

        REGISTRY.register(PortalCollector())

        # The core's retention steps (portal/retention.py); features register theirs in their own ready().
        from . import events, logarchive, registry, retention  # models load only once the app registry is ready

        registry.retention_step(name="logs", label="logs archived", function=logarchive.archive_due, order=10)
        registry.retention_step(name="webhook_deliveries", label="webhook deliveries removed",
                                function=retention.prune_webhook_deliveries, order=30)
        registry.retention_step(name="events", label="stored events removed", function=events.prune_events, order=35)
        registry.retention_step(name="login_records", label="login records removed",
                                function=retention.prune_login_records, order=40)
        # The core's own kind of event (portal/events.py), and the API's event list; features register theirs. The
        # routers by their dotted paths: django-ninja and pydantic load with the URLconf, not in every process.
        registry.api_router("events/", "portal.api_events.router", order=5)
        registry.api_router("me/", "portal.api_me.router", order=4)
        registry.notification_event("retention.run", "Retention pass finished",
                                    schema=str(Path(__file__).parent / "event_schemas" / "retention.run.v1.json"))
        registry.stored_files(logarchive.stored_archives)  # backups record them, restores check them


class PortalAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin, with the site that audits every change made through it."""

    default = False
    default_site = "portal.admin_site.AuditedAdminSite"
