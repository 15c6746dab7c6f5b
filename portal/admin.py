"""The core's models in the Django admin site (superusers only). Every change made there is audited: see
`portal.admin_site`. The audit trail itself is read-only here."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import AuditEvent, Event, IdentityGroupMapping, LogArchive, Membership, RetentionRun, Run, Team, User


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    fieldsets = UserAdmin.fieldsets + (("Portal", {"fields": ("is_helpdesk",)}),)
    list_display = ("username", "email", "is_helpdesk", "is_superuser", "is_active")
    list_filter = ("is_helpdesk", "is_superuser", "is_active")


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit trail is append-only, even for superusers."""

    list_display = ("seq", "created_at", "actor_name", "action", "summary", "team_name")
    list_filter = ("action",)
    search_fields = ("summary", "actor_name", "object_repr")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("pk", "kind", "title", "team", "status", "created_at", "finished_at")
    list_filter = ("kind", "status")
    readonly_fields = [f.name for f in Run._meta.fields]

    def has_add_permission(self, request):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records the portal writes itself: shown, never edited here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RetentionRun)
class RetentionRunAdmin(ReadOnlyAdmin):
    """Each retention pass: when, the settings it applied, what each step removed, and the steps that failed."""

    list_display = ("started_at", "finished_at", "status", "trigger", "total_removed")
    list_filter = ("status", "trigger")
    readonly_fields = ("started_at", "finished_at", "status", "trigger", "policy", "removed", "errors")


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    """Events as they were emitted (portal.events): the envelope webhooks and the API's event list carry."""

    list_display = ("time", "type", "team", "subject_kind", "subject_id")
    list_filter = ("type", "team")
    readonly_fields = ("sequence", "uuid", "type", "version", "time", "team", "subject_kind", "subject_id", "envelope")


@admin.register(IdentityGroupMapping)
class IdentityGroupMappingAdmin(admin.ModelAdmin):
    """Which identity provider group gives which role in which team at sign-in (portal.sso; docs/sso.md). Changes apply
    at each user's next sign-in."""

    list_display = ("group", "team", "role")
    list_filter = ("team", "role")
    search_fields = ("group",)


@admin.register(LogArchive)
class LogArchiveAdmin(ReadOnlyAdmin):
    list_display = ("run", "lines", "size", "text_bytes", "created_at", "name")
    readonly_fields = ("run", "name", "lines", "chunks", "text_bytes", "size", "sha256", "created_at")
    exclude = ("index",)
