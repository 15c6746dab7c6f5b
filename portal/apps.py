from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.core import checks

from .ratelimit import check_rates


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal core"

    def ready(self):
        checks.register(check_rates)
        # The portal's own metrics, read at each scrape (models load only once the app registry is ready, i.e. here).
        from prometheus_client import REGISTRY

        from .metrics import PortalCollector

        REGISTRY.register(PortalCollector())


class PortalAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin, with the site that audits every change made through it."""

    default = False
    default_site = "portal.admin_site.AuditedAdminSite"
