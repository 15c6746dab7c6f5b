"""Rollouts: one digest taken to the hosts that follow a stage, batch by batch, under the stage's rollout policy.

- `RolloutPolicy`: a stage's policy, as data (batches, soak, failure threshold, disruption budget, staggered
  downloads, maintenance windows, soft reboots, automatic rollback, and whether hosts follow promotions on their own).
  Releases never import hosts: the policy points at the stage, not the other way.
- `MaintenanceWindow`: when a policy's hosts may reboot (recurring weekdays and hours, in the policy's time zone).
- `Rollout`: one run of a policy for one digest; its log and status live in a `portal.Run` (kind `rollout`).
- `RolloutHost`: one host's place in a rollout (its batch) and its step, each step recorded before it acts, so a
  worker that dies mid-way resumes from these rows without acting twice on a host. The database allows one active
  rollout per host (a partial unique index).

State changes live in `hosts.rollouts.services` and `hosts.rollouts.engine`; nothing here writes on save.
"""

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from builds.releases.models import WEEKDAYS, Promotion, Stage, validate_timezone
from hosts.models import Host
from portal.models import Run, Team, TeamScopedQuerySet


class RolloutPolicyQuerySet(TeamScopedQuerySet):
    team_path = "stage__team"


class RolloutPolicy(models.Model):
    """How a new digest reaches the hosts of one stage."""

    stage = models.OneToOneField(Stage, on_delete=models.CASCADE, related_name="rollout_policy")
    follow_automatically = models.BooleanField(
        default=False, help_text="Hosts follow automatically: a promotion to this stage starts a rollout with this "
                                 "policy, with no one pressing a button.")
    canary_selector = models.CharField(max_length=100, blank=True,
                                       help_text="A label (e.g. `canary` or `site=lab`): the hosts that carry it go first.")
    canary_count = models.PositiveIntegerField(null=True, blank=True, help_text="Or: this many hosts go first.")
    canary_percent = models.PositiveSmallIntegerField(null=True, blank=True,
                                                      help_text="Or: this share of the hosts (%) goes first.")
    batch_count = models.PositiveIntegerField(null=True, blank=True, help_text="Hosts per batch after the canary.")
    batch_percent = models.PositiveSmallIntegerField(null=True, blank=True,
                                                     help_text="Or: this share of the hosts (%) per batch.")
    soak_seconds = models.PositiveIntegerField(
        default=0, help_text="How long an updated host must stay up on the new digest before it counts as updated; "
                             "the next batch starts once every host of the batch has.")
    max_failed_percent = models.PositiveSmallIntegerField(
        default=0, help_text="The rollout halts when more than this share (%) of a batch fails.")
    max_failed_total = models.PositiveIntegerField(null=True, blank=True,
                                                   help_text="Or when this many hosts have failed in all.")
    rollback_failed = models.BooleanField(default=True, help_text="Roll back failed hosts (`bootc rollback --apply`).")
    budget_label = models.CharField(
        max_length=60, blank=True, default="site",
        help_text="The label key that groups hosts for the budgets below (e.g. `site` groups site=a, site=b, ...). "
                  "Empty: the whole fleet is one group.")
    max_updating_per_group = models.PositiveIntegerField(
        null=True, blank=True, help_text="Disruption budget: at most this many hosts of a group rebooting or soaking "
                                         "at once. Empty: no limit.")
    max_downloading_per_group = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many hosts of a group downloading at once. Empty: no limit.")
    soft_reboot = models.BooleanField(default=True, help_text="Soft-reboot where the staged deployment allows it "
                                                              "(`--soft-reboot=auto`, bootc 1.7.0 and later).")
    window_timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone],
                                       help_text="The time zone maintenance windows are written in.")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    objects = RolloutPolicyQuerySet.as_manager()

    def __str__(self):
        return f"rollout policy of {self.stage}"

    def as_data(self):
        """The policy as a rollout keeps it (a later edit does not change a running rollout)."""
        fields = ("follow_automatically", "canary_selector", "canary_count", "canary_percent", "batch_count",
                  "batch_percent", "soak_seconds", "max_failed_percent", "max_failed_total", "rollback_failed",
                  "budget_label", "max_updating_per_group", "max_downloading_per_group", "soft_reboot",
                  "window_timezone")
        data = {name: getattr(self, name) for name in fields}
        data["windows"] = [window.as_data() for window in self.windows.all()]
        return data


class MaintenanceWindow(models.Model):
    """Hosts reboot only inside a window: on `weekdays` (0 = Monday) from `starts` to `ends`, in the policy's time zone;
    an end not after the start runs past midnight. Downloads happen at any time. A policy without windows reboots at
    any time."""

    policy = models.ForeignKey(RolloutPolicy, on_delete=models.CASCADE, related_name="windows")
    weekdays = models.JSONField(default=list)
    starts = models.TimeField()
    ends = models.TimeField()

    class Meta:
        ordering = ["policy", "starts", "id"]

    def __str__(self):
        days = ", ".join(WEEKDAYS[d] for d in sorted(self.weekdays)) if self.weekdays else "no day"
        return f"{days} {self.starts:%H:%M}-{self.ends:%H:%M}"

    def as_data(self):
        return {"weekdays": sorted(self.weekdays), "starts": self.starts.strftime("%H:%M"),
                "ends": self.ends.strftime("%H:%M")}


class RolloutStatus(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    ABORTING = "aborting", "Aborting"
    HALTED = "halted", "Halted"
    ABORTED = "aborted", "Aborted"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


ACTIVE_ROLLOUT_STATUSES = (RolloutStatus.RUNNING, RolloutStatus.PAUSED, RolloutStatus.ABORTING)


class RolloutQuerySet(TeamScopedQuerySet):
    team_path = "team"

    def visible_to(self, user):
        """A team's rollouts; every team's for help-desk users, who read host state and history everywhere."""
        if user.is_authenticated and user.is_helpdesk:
            return self.all()
        return super().visible_to(user)

    def active(self):
        return self.filter(status__in=ACTIVE_ROLLOUT_STATUSES)


class Rollout(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="rollouts")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="rollouts")
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="rollout")
    promotion = models.ForeignKey(Promotion, null=True, blank=True, on_delete=models.SET_NULL, related_name="rollouts")
    reference = models.CharField(max_length=512, help_text="What the hosts are to track: repository:tag.")
    digest = models.CharField(max_length=80, help_text="The digest to take the hosts to (per-arch or index).")
    digests = models.JSONField(default=dict, help_text="{architecture: digest}, '' for the top level")
    version = models.CharField(max_length=200, blank=True)
    switch = models.BooleanField(default=False, help_text="Hosts switch to `reference` (another image stream) instead "
                                                          "of upgrading the one they track.")
    policy = models.JSONField(default=dict, help_text="The policy as it was when the rollout started")
    status = models.CharField(max_length=12, choices=RolloutStatus.choices, default=RolloutStatus.RUNNING,
                              db_index=True)
    status_note = models.TextField(blank=True)
    abort_with_rollback = models.BooleanField(default=False)
    batch = models.PositiveIntegerField(default=0, help_text="The batch in progress")
    batches = models.PositiveIntegerField(default=0)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RolloutQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"rollout #{self.pk} of {self.stage}"

    def get_absolute_url(self):
        return reverse("rollouts:detail", args=[self.pk])

    @property
    def is_active(self):
        return self.status in ACTIVE_ROLLOUT_STATUSES


class Step(models.TextChoices):
    """Where one host stands in a rollout, in the order it goes through them."""

    WAITING = "waiting", "Waiting"
    DOWNLOADING = "downloading", "Downloading"
    STAGED = "staged", "Staged"
    REBOOTING = "rebooting", "Rebooting"
    SOAKING = "soaking", "Soaking"
    UPDATED = "updated", "Updated"
    FAILED = "failed", "Failed"
    ROLLING_BACK = "rolling_back", "Rolling back"
    ROLLED_BACK = "rolled_back", "Rolled back"
    SKIPPED = "skipped", "Skipped"


DONE_STEPS = (Step.UPDATED, Step.FAILED, Step.ROLLED_BACK, Step.SKIPPED)
FAILED_STEPS = (Step.FAILED, Step.ROLLED_BACK, Step.ROLLING_BACK)


class RolloutHost(models.Model):
    """One host in one rollout. `active` stays true until the host is done with the rollout; the database allows one
    active row per host, so two rollouts can never act on the same host."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="hosts")
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="rollout_steps")
    batch = models.PositiveIntegerField(help_text="0 is the canary")
    position = models.PositiveIntegerField(default=0)
    group = models.CharField(max_length=120, blank=True, help_text="Its budget group (the budget label's value)")
    step = models.CharField(max_length=16, choices=Step.choices, default=Step.WAITING)
    active = models.BooleanField(default=True)
    reason = models.TextField(blank=True)
    previous_digest = models.CharField(max_length=80, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Download attempts")
    checked_at = models.DateTimeField(null=True, blank=True, help_text="When its pre-flight checks passed")
    download_started_at = models.DateTimeField(null=True, blank=True)
    staged_at = models.DateTimeField(null=True, blank=True)
    reboot_sent_at = models.DateTimeField(null=True, blank=True, help_text="Set before the reboot is sent: never twice")
    back_at = models.DateTimeField(null=True, blank=True)
    rollback_sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    soft_reboot = models.BooleanField(default=False)
    downtime_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["rollout", "batch", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["host"], condition=Q(active=True), name="one_active_rollout_per_host"),
            models.UniqueConstraint(fields=["rollout", "host"], name="host_once_per_rollout"),
        ]
        indexes = [models.Index(fields=["rollout", "batch", "step"])]

    def __str__(self):
        return f"{self.host} in {self.rollout}: {self.get_step_display()}"

    @property
    def soak_ends_at(self):
        if self.back_at is None:
            return None
        return self.back_at + timedelta(seconds=self.rollout.policy.get("soak_seconds") or 0)


def window_open(windows, tz_name, when):
    """Whether `when` falls in one of `windows` (as `MaintenanceWindow.as_data()`), in `tz_name`. No windows: always."""
    if not windows:
        return True
    local = when.astimezone(ZoneInfo(tz_name or "UTC"))
    clock = local.strftime("%H:%M")
    for window in windows:
        days, starts, ends = window["weekdays"], window["starts"], window["ends"]
        if starts < ends:
            if local.weekday() in days and starts <= clock < ends:
                return True
        elif (local.weekday() in days and clock >= starts) or (
                (local - timedelta(days=1)).weekday() in days and clock < ends):
            return True
    return False


def window_next_open(windows, tz_name, after):
    """When one of `windows` is open next, at or after `after`: `after` itself when one is open (or there are no
    windows), else the next start (UTC); None when none ever opens (a policy refuses that when it is saved)."""
    if window_open(windows, tz_name, after):
        return after
    zone = ZoneInfo(tz_name or "UTC")
    local = after.astimezone(zone)
    starts = []
    for days in range(8):
        day = (local + timedelta(days=days)).date()
        for window in windows:
            if day.weekday() in window["weekdays"]:
                hours, minutes = (int(part) for part in window["starts"].split(":"))
                start = datetime.combine(day, time(hours, minutes), tzinfo=zone)
                if start > after:
                    starts.append(start)
    return min(starts).astimezone(UTC) if starts else None
