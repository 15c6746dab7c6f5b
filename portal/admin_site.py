"""The admin site: every change made through it is audited like a change made in the portal.

`AuditedAdminSite` is the project's default admin site (`portal.apps.PortalAdminConfig`). It gives each registered
ModelAdmin (the portal's, the features', and those of installed packages such as django-axes and django-otp) the
`AuditedAdminMixin`, so a model registered later cannot slip past. Kept apart from `portal.admin`, which registers
models and so is imported while this site is being built.
"""

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.utils.text import capfirst

from . import services, twofactor
from .models import Team

# Fields whose values never go into the audit trail (that they changed does).
_SECRET_FIELDS = {"password", "key", "secret", "private_key", "token", "token_hash"}


class AuditedAdminMixin:
    """Records each addition, change and deletion made in the admin site as an `admin.*` audit event, in the same
    transaction as the change (the admin's views are atomic). The event names the object, its team when it has one,
    and what changed: Django's own change message (fields, and inline objects added, changed or deleted), with the new
    value of each changed field of the object itself."""

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        _audit_admin(request, obj, "add", message)
        return entry

    def log_change(self, request, obj, message):
        entry = super().log_change(request, obj, message)
        _audit_admin(request, obj, "change", message)
        return entry

    def log_deletions(self, request, queryset):
        objects = list(queryset)
        entries = super().log_deletions(request, objects)
        for obj in objects:
            _audit_admin(request, obj, "delete", [])
        return entries


def _audit_admin(request, obj, verb, message):
    changes = message if isinstance(message, list) else []
    changed_labels = {label for change in changes for label in change.get("changed", {}).get("fields", [])
                      if "name" not in change.get("changed", {})}
    values = {}
    for field in obj._meta.concrete_fields:
        if capfirst(field.verbose_name) in changed_labels:
            secret = field.name in _SECRET_FIELDS
            values[field.name] = "(changed)" if secret else str(getattr(obj, field.attname))
    model = obj._meta.verbose_name
    services.audit(
        action=f"admin.{verb}", summary=f"{verb}{'d' if verb.endswith('e') else 'ed'} {model} {obj} in the admin site",
        actor=request.user, team=_team_of(obj), obj=obj, request=request,
        detail={"model": obj._meta.label_lower, "changes": changes, "values": values},
    )


def _team_of(obj):
    if isinstance(obj, Team):
        return obj
    team = getattr(obj, "team", None)
    return team if isinstance(team, Team) else None


class AuditedAdminSite(admin.AdminSite):
    """The admin site, with every ModelAdmin audited (see AuditedAdminMixin). Once any team requires a second factor,
    the site requires a sign-in verified with one: it can change every team's members."""

    def has_permission(self, request):
        return super().has_permission(request) and not self.needs_second_factor(request)

    @staticmethod
    def needs_second_factor(request):
        return not twofactor.is_verified(request.user) and Team.objects.filter(require_two_factor=True).exists()

    def login(self, request, extra_context=None):
        if request.user.is_active and request.user.is_staff and self.needs_second_factor(request):
            messages.warning(request, "A team requires a second factor, so the admin site needs a sign-in verified with "
                                      "one (it can change every team's members).")
            return redirect("portal:two_factor")
        return super().login(request, extra_context)

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, AuditedAdminMixin):
            admin_class = type(admin_class.__name__, (AuditedAdminMixin, admin_class), {"__module__": admin_class.__module__})
        return super().register(model_or_iterable, admin_class, **options)


