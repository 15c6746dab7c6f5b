"""The core's models, one module per aggregate: people, teams and their credentials (`teams`), the audit trail
(`audit`), runs and their logs (`runs`), events and where they go (`events`), retention passes (`retention`).
Everything is importable from `portal.models`, as every app and migration does."""

from .audit import AuditEvent, AuditQuerySet
from .events import DeliveryStatus, Event, EventQuerySet, NotificationWebhook, WebhookDelivery, validate_webhook_events
from .retention import RetentionRun, RetentionStatus
from .runs import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    HELPDESK_RUN_KINDS,
    LogArchive,
    LogChunk,
    LogSection,
    Run,
    RunKind,
    RunQuerySet,
    RunStatus,
    action_to_cancel,
)
from .teams import (
    IS_TEAM_TOKEN,
    PERSONAL_SCOPES,
    ROLE_ACTIONS,
    AccessToken,
    AccessTokenQuerySet,
    Action,
    IdentityGroupMapping,
    Membership,
    MembershipQuerySet,
    Role,
    Scope,
    Team,
    TeamQuerySet,
    TeamScopedQuerySet,
    User,
)

__all__ = [
    "IS_TEAM_TOKEN", "MembershipQuerySet",
    "ACTIVE_STATUSES", "FINISHED_STATUSES", "HELPDESK_RUN_KINDS", "PERSONAL_SCOPES", "ROLE_ACTIONS", "AccessToken",
    "AccessTokenQuerySet", "Action", "AuditEvent", "AuditQuerySet", "DeliveryStatus", "Event", "EventQuerySet",
    "IdentityGroupMapping", "LogArchive", "LogChunk", "LogSection", "Membership", "NotificationWebhook", "RetentionRun",
    "RetentionStatus", "Role", "Run", "RunKind", "RunQuerySet", "RunStatus", "Scope", "Team", "TeamQuerySet",
    "TeamScopedQuerySet", "User", "WebhookDelivery", "action_to_cancel", "validate_webhook_events",
]
