"""Releases: a team's stages (dev -> test -> prod, each also the tag it moves in every repository) with their policy,
promotions of a digest from stage to stage, the approvals bound to that digest, and each stage's history.
docs/promotions.md describes the gate and how a promotion is applied.
"""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo, available_timezones

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from builds.models import Build, ImageDefinition
from portal.formatting import short_digest
from portal.models import ROLE_ACTIONS, Action, Membership, Run, Team, TeamScopedQuerySet

# --- Stages ----------------------------------------------------------------------------------------------------------

STAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")


def validate_stage_name(value):
    if not STAGE_NAME_RE.match(value or ""):
        raise ValidationError("A stage name is also an image tag: lower-case letters, digits, . _ - (e.g. prod).")


def validate_timezone(value):
    if value not in available_timezones():
        raise ValidationError(f"{value!r} is not a time zone name (e.g. UTC, Europe/Paris, America/New_York).")


class Stage(models.Model):
    """A step on the way to production (dev -> test -> prod) for one team; also the tag it moves in each repository.

    The stage's policy says who must sign off a promotion to it (see docs/promotions.md): how many approvals, from the
    approver role or from named approver groups (`group_requirements`), who may not approve, when approvals expire,
    when changes may happen (`change_windows`, `freezes`, and the emergency override), whether a digest must have
    been in the previous stage first, and whether it must have passed a boot test (answered through
    `portal.registry.promotion_check`). Whether a stage is pinned after a rollback is read from its history.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=40, validators=[validate_stage_name])
    position = models.PositiveSmallIntegerField(help_text="Order of the stage: lower comes first.")
    description = models.CharField(max_length=300, blank=True)
    required_approvals = models.PositiveSmallIntegerField(
        default=0, help_text="Distinct people who must approve a promotion; 0 applies it as soon as it is requested.")
    exclude_requester = models.BooleanField(default=True, help_text="Whoever asked for the promotion cannot approve it.")
    exclude_author = models.BooleanField(default=True, help_text="The author of the revision cannot approve it.")
    exclude_build_triggerer = models.BooleanField(default=True, help_text="Whoever started the build cannot approve it.")
    approval_ttl_hours = models.PositiveIntegerField(
        null=True, blank=True, help_text="Approvals older than this stop counting. Empty: they do not expire.")
    require_previous_stage = models.BooleanField(
        default=True, help_text="A digest must have reached the previous stage before it may be promoted here.")
    require_boot_test = models.BooleanField(
        default=False, help_text="A digest must have passed a boot test in a throwaway VM before it may be approved "
                                 "or applied here; a promotion starts one if it has none.")
    emergency_extra_approvals = models.PositiveSmallIntegerField(
        default=1, help_text="Extra approvals an emergency override needs (it applies during freezes and outside "
                             "change windows).")
    rollback_required_approvals = models.PositiveSmallIntegerField(
        default=1, help_text="Approvals a rollback to an earlier digest needs.")
    window_timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone],
                                       help_text="The time zone change windows are written in.")

    class Meta:
        ordering = ["team", "position"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="stage_name_unique_per_team"),
            models.UniqueConstraint(fields=["team", "position"], name="stage_position_unique_per_team"),
        ]

    def __str__(self):
        return f"{self.team.slug}/{self.name}"

    def get_absolute_url(self):
        return reverse("releases:stage_detail", args=[self.pk])

    @property
    def tag(self):
        return self.name

    def reference(self, definition):
        """The image reference hosts track for this stage: repository:tag."""
        return f"{definition.repository}:{self.tag}"

    def previous_stage(self):
        return Stage.objects.filter(team_id=self.team_id, position__lt=self.position).order_by("-position").first()

    def active_freeze(self, now=None):
        now = now or timezone.now()
        return (self.freezes.filter(lifted_at__isnull=True, starts_at__lte=now)
                .filter(models.Q(ends_at__isnull=True) | models.Q(ends_at__gt=now)).order_by("starts_at").first())

    def in_change_window(self, now=None):
        """True when there are no windows, or `now` falls in one of them (in the stage's time zone)."""
        windows = list(self.change_windows.all())
        if not windows:
            return True
        return any(window.contains(now or timezone.now(), self.window_timezone) for window in windows)

    def blocked_reason(self, now=None):
        """Why a promotion may not be applied now ("" when it may): a freeze, or outside every change window."""
        freeze = self.active_freeze(now)
        if freeze is not None:
            until = f" until {freeze.ends_at:%Y-%m-%d %H:%M} UTC" if freeze.ends_at else " until it is lifted"
            return f"{self.name} is frozen{until}: {freeze.reason}"
        if not self.in_change_window(now):
            windows = "; ".join(str(w) for w in self.change_windows.all())
            return f"{self.name} takes changes only in its change windows ({windows}, {self.window_timezone})"
        return ""


DEFAULT_STAGES = (("dev", 0), ("test", 1), ("prod", 2))


# --- Approver groups, change windows and freezes ----------------------------------------------------------------------

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


class ApproverGroup(models.Model):
    """Named people of a team whose approval a stage may require ("1 from QA and 1 from Security")."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="approver_groups")
    name = models.CharField(max_length=60)
    description = models.CharField(max_length=300, blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="approver_groups")
    created_at = models.DateTimeField(default=timezone.now)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="approver_group_name_unique_per_team")]

    def __str__(self):
        return self.name


class StageGroupRequirement(models.Model):
    """At least `minimum` approvals of a promotion to `stage` must come from members of `group`.

    When a stage has any, only members of its groups may approve (the approver role alone no longer counts); one person
    counts toward one group only, so "1 from QA and 1 from Security" always means two people.
    """

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="group_requirements")
    group = models.ForeignKey(ApproverGroup, on_delete=models.CASCADE, related_name="stage_requirements")
    minimum = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["stage", "group__name"]
        constraints = [models.UniqueConstraint(fields=["stage", "group"], name="one_requirement_per_stage_group")]

    def __str__(self):
        return f"{self.minimum} from {self.group.name}"


class ChangeWindow(models.Model):
    """When a stage takes changes: on `weekdays` (0 = Monday) from `starts` to `ends`, in the stage's time zone.

    A window whose end is not after its start runs past midnight (Fri 22:00-02:00 ends on Saturday). A stage with no
    windows takes changes at any time (unless frozen).
    """

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="change_windows")
    weekdays = models.JSONField(default=list, help_text="0 = Monday ... 6 = Sunday")
    starts = models.TimeField()
    ends = models.TimeField()

    class Meta:
        ordering = ["stage", "starts", "id"]

    def __str__(self):
        days = ", ".join(WEEKDAYS[d] for d in sorted(self.weekdays)) if self.weekdays else "no day"
        return f"{days} {self.starts:%H:%M}-{self.ends:%H:%M}"

    def clean(self):
        if not self.weekdays or any(not isinstance(d, int) or not 0 <= d <= 6 for d in self.weekdays):
            raise ValidationError("Pick at least one day of the week.")
        if self.starts == self.ends:
            raise ValidationError("A window must not start and end at the same time.")

    def contains(self, when, tz_name="UTC"):
        local = when.astimezone(ZoneInfo(tz_name))
        clock = local.time().replace(tzinfo=None)
        if self.starts < self.ends:
            return local.weekday() in self.weekdays and self.starts <= clock < self.ends
        # Past midnight: the evening part on a listed day, or the morning part on the day after one.
        if local.weekday() in self.weekdays and clock >= self.starts:
            return True
        return (local - timedelta(days=1)).weekday() in self.weekdays and clock < self.ends


class StageFreeze(models.Model):
    """No promotions to a stage from `starts_at` until `ends_at` (or until lifted), except emergency overrides."""

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="freezes")
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Empty: until someone lifts it.")
    reason = models.CharField(max_length=300)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")

    class Meta:
        ordering = ["stage", "-starts_at"]

    def __str__(self):
        return f"freeze of {self.stage} from {self.starts_at:%Y-%m-%d %H:%M}: {self.reason}"

    def is_active(self, now=None):
        now = now or timezone.now()
        return self.lifted_at is None and self.starts_at <= now and (self.ends_at is None or self.ends_at > now)


class PromotionKind(models.TextChoices):
    PROMOTE = "promote", "Promotion"
    ROLLBACK = "rollback", "Rollback"


class PromotionStatus(models.TextChoices):
    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved, waiting to apply"
    APPLYING = "applying", "Applying"
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    SUPERSEDED = "superseded", "Superseded"


# Waiting for approval, or approved and waiting for the stage to take changes: what "pending" means on the dashboard.
OPEN_PROMOTION_STATUSES = (PromotionStatus.PENDING, PromotionStatus.APPROVED)


class PromotionQuerySet(TeamScopedQuerySet):
    team_path = "target_stage__team"

    def with_related(self):
        return self.select_related("definition", "definition__team", "build", "build__revision", "build__run",
                                   "target_stage", "source_stage", "requested_by", "run")

    def waiting_for(self, user):
        """Pending promotions `user` may approve and has not decided: the approver's inbox, as one query.

        Mirrors `builds.releases.gate.approval_refusal` (role or group eligibility, minus requester, author and build
        triggerer where the stage's policy excludes them). An approval of the user's that expired asks them again.
        """
        if not user.is_authenticated:
            return self.none()
        approver_roles = [role for role, actions in ROLE_ACTIONS.items() if Action.APPROVE in actions]
        has_groups = models.Exists(StageGroupRequirement.objects.filter(stage=models.OuterRef("target_stage")))
        by_role = ~has_groups & models.Q(
            target_stage__team__in=Membership.objects.filter(user=user, role__in=approver_roles).values("team"))
        by_group = models.Q(target_stage__in=StageGroupRequirement.objects.filter(group__members=user).values("stage"))
        return (
            self.filter(status=PromotionStatus.PENDING)
            .filter(by_role | by_group)
            .exclude(models.Q(target_stage__exclude_requester=True) & models.Q(requested_by=user))
            .exclude(models.Q(target_stage__exclude_author=True) & models.Q(build__revision__author=user))
            .exclude(models.Q(target_stage__exclude_build_triggerer=True) & models.Q(build__run__started_by=user))
            .exclude(pk__in=Approval.objects.filter(approver=user, superseded_at__isnull=True)
                     .exclude(Approval.expired_q()).values("promotion"))
        )


class Promotion(models.Model):
    """A request to move `digest` (built by `build` of `definition`) to `target_stage`'s tag, and what became of it.

    Approvals are bound to the digest. The approval that completes the quorum is counted with this row locked, and
    starts a `promotion_apply` run (`run`, the latest attempt) that copies the digest to the tag with skopeo and
    verifies it; success appends a `StageHistory` entry. A rollback is a promotion of an earlier digest of the stage,
    under the stage's rollback policy; it pins the stage until a promotion explicitly rolls it forward.

    Requests know their order by build number: asking for a newer build of the definition to go to a stage marks the
    open requests for older builds to that stage as superseded (`superseded_by`; they can be reopened), and approving a
    request older than what the stage holds needs the stage's name typed, since it would move the stage back.
    """

    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="promotions")
    build = models.ForeignKey(Build, on_delete=models.PROTECT, related_name="promotions")
    digest = models.CharField(max_length=80, db_index=True)
    kind = models.CharField(max_length=16, choices=PromotionKind.choices, default=PromotionKind.PROMOTE)
    source_stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                     help_text="The stage before the target (empty for the first stage).")
    target_stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="promotions")
    reason = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="promotion_requests")
    requested_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.CharField(max_length=16, choices=PromotionStatus.choices, default=PromotionStatus.PENDING,
                              db_index=True)
    status_note = models.CharField(max_length=500, blank=True, help_text="Why it waits, or why it failed.")
    emergency = models.BooleanField(default=False, help_text="Emergency override: applies during a freeze or outside "
                                                             "change windows, with extra approvals.")
    emergency_reason = models.CharField(max_length=500, blank=True)
    roll_forward = models.BooleanField(default=False, help_text="Moves a stage on that is pinned after a rollback.")
    previous_digest = models.CharField(max_length=80, blank=True, help_text="What the stage held when it was asked.")
    decided_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    superseded_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="supersedes",
                                      help_text="The request for a newer build of the same stage that replaced this one.")
    updated_at = models.DateTimeField(auto_now=True)

    objects = PromotionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One application at a time per stage tag: the tag is moved by one skopeo copy at a time.
            models.UniqueConstraint(fields=["target_stage", "definition"], condition=models.Q(status="applying"),
                                    name="one_applying_promotion_per_stage_tag"),
        ]
        indexes = [models.Index(fields=["status", "target_stage"]), models.Index(fields=["definition", "-created_at"])]

    def __str__(self):
        what = "Rollback" if self.kind == PromotionKind.ROLLBACK else "Promotion"
        return f"{what} #{self.pk} of {self.definition} to {self.target_stage.name}"

    def get_absolute_url(self):
        return reverse("releases:promotion_detail", args=[self.pk])

    @property
    def team(self):
        return self.target_stage.team

    @property
    def short_digest(self):
        return short_digest(self.digest)

    @property
    def image_ref(self):
        return f"{self.definition.repository}@{self.digest}"

    @property
    def target_ref(self):
        return self.target_stage.reference(self.definition)

    @property
    def is_open(self):
        return self.status in OPEN_PROMOTION_STATUSES

    @property
    def is_rollback(self):
        return self.kind == PromotionKind.ROLLBACK

    def required_approvals(self):
        """How many distinct approvals this request needs under the stage's current policy."""
        stage = self.target_stage
        needed = stage.rollback_required_approvals if self.is_rollback else stage.required_approvals
        if self.emergency:
            needed += stage.emergency_extra_approvals
        return needed


class PromotionEvent(models.TextChoices):
    """What promotions emit through the core's events (registered in builds.releases.apps with the JSON Schemas in
    builds/releases/event_schemas/, composed in builds.releases.notifications). "promotion.decided" became
    promotion.approved and promotion.rejected before the first deployment, so no stored webhook names it."""

    APPROVAL_REQUESTED = "promotion.requested", "Approval requested"
    APPROVED = "promotion.approved", "Promotion approved"
    REJECTED = "promotion.rejected", "Promotion rejected"
    APPLIED = "promotion.applied", "Promotion applied"
    FAILED = "promotion.failed", "Promotion failed"


class ApprovalDecision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class Approval(models.Model):
    """One person's decision on a promotion, bound to the digest they saw. A decision that expired may be given again
    (the old row is kept, `superseded_at` set)."""

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                 related_name="promotion_approvals")
    approver_name = models.CharField(max_length=150)
    decision = models.CharField(max_length=8, choices=ApprovalDecision.choices)
    digest = models.CharField(max_length=80)
    comment = models.TextField(blank=True)
    groups = models.JSONField(default=list, blank=True, help_text="The approver groups they were in, when deciding.")
    created_at = models.DateTimeField(default=timezone.now)
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["promotion", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["promotion", "approver"], condition=models.Q(superseded_at__isnull=True),
                                    name="one_live_decision_per_approver"),
        ]

    def __str__(self):
        return f"{self.approver_name} {self.get_decision_display().lower()} {self.promotion}"

    def expires_at(self, stage):
        if not stage.approval_ttl_hours:
            return None
        return self.created_at + timedelta(hours=stage.approval_ttl_hours)

    def is_expired(self, stage, now=None):
        expires = self.expires_at(stage)
        return expires is not None and expires <= (now or timezone.now())

    @staticmethod
    def expired_q(now=None):
        """`is_expired` as a filter on approvals (their stage's TTL, in hours; none or 0: never)."""
        oldest_live = _HoursBefore(models.Value(now or timezone.now(), output_field=models.DateTimeField()),
                                   models.F("promotion__target_stage__approval_ttl_hours"))
        return models.Q(promotion__target_stage__approval_ttl_hours__gt=0, created_at__lte=oldest_live)


class _HoursBefore(models.Func):
    """`moment` minus `hours` (an integer expression) hours. Django cannot multiply a duration by a column on SQLite,
    so this is written out for the portal's two databases."""

    arity = 2
    output_field = models.DateTimeField()

    def as_sql(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, template="(%(expressions)s * interval '1 hour')", arg_joiner=" - ",
                              **extra_context)

    def as_sqlite(self, compiler, connection, **extra_context):
        moment, moment_params = compiler.compile(self.source_expressions[0])
        hours, hours_params = compiler.compile(self.source_expressions[1])
        return (f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {moment}, '-' || {hours} || ' hours')",
                [*moment_params, *hours_params])


class StageHistoryQuerySet(models.QuerySet):
    def current(self, stage, definition):
        """The entry for what `stage` holds now for `definition`, or None."""
        return self.filter(stage=stage, definition=definition).order_by("-applied_at", "-id").first()


class StageHistory(models.Model):
    """The stage tag of a definition's repository pointed at `digest` from `applied_at` on: who, why, which promotion."""

    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="history")
    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="stage_history")
    digest = models.CharField(max_length=80, db_index=True)
    previous_digest = models.CharField(max_length=80, blank=True)
    build = models.ForeignKey(Build, null=True, blank=True, on_delete=models.SET_NULL, related_name="stage_history")
    promotion = models.OneToOneField(Promotion, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="history_entry")
    kind = models.CharField(max_length=16, choices=PromotionKind.choices, default=PromotionKind.PROMOTE)
    roll_forward = models.BooleanField(default=False)
    applied_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", help_text="Who asked for it.")
    applied_by_name = models.CharField(max_length=150, blank=True)
    applied_at = models.DateTimeField(default=timezone.now)

    objects = StageHistoryQuerySet.as_manager()

    class Meta:
        ordering = ["-applied_at", "-id"]
        indexes = [models.Index(fields=["stage", "definition", "-applied_at"])]
        verbose_name_plural = "stage history"

    def __str__(self):
        return f"{self.stage} of {self.definition} = {short_digest(self.digest)}"

    @property
    def short_digest(self):
        return short_digest(self.digest)

    @property
    def pins(self):
        """A rollback pins the stage: promotions are refused until one explicitly rolls it forward."""
        return self.kind == PromotionKind.ROLLBACK


def lands_on_inbox(user) -> bool:
    """People with the approver role somewhere: deciding on promotions is their job, so they land on the inbox."""
    return Membership.objects.filter(user=user, role="approver").exists()


def dashboard_counts(user, teams):
    """The dashboard's count of promotions waiting for a decision or a window, over `teams` (already limited to what
    the user may see)."""
    return {"pending_promotions": Promotion.objects.filter(target_stage__team__in=teams,
                                                           status__in=OPEN_PROMOTION_STATUSES).count()}
