"""Image definitions, revisions and builds.

A team's **image definition** names a repository and its platforms; each **revision** is an immutable Containerfile (plus
its build context: a few small files, or a git URL) with its author and sha256; each **build** turns one revision into
an image for one platform, pushed to the repository, whose **digest** is the image's identity from then on. A build's
status is its `portal.Run`'s status (the run also holds timestamps, trigger, log, phase "building"/"pushing"/...),
so there is one status column and nothing to drift.
"""

import hashlib
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from portal import failures
from portal.formatting import short_digest
from portal.models import FINISHED_STATUSES, Run, RunStatus, Team, TeamScopedQuerySet

from .builders import Builder

REPOSITORY_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
# registry host[:port] followed by one or more components.
REPOSITORY_RE = re.compile(
    r"^(?P<registry>[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?)"
    r"/(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)$"
)
PLATFORM_RE = re.compile(r"^linux/(amd64|arm64|ppc64le|s390x|386|arm(/v[5-8])?|riscv64)$")
BUILD_ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The labels every portal build carries (also read back from the registry to prove where an image came from).
LABEL_PREFIX = "io.imagemode.portal."
LABEL_BUILD_ID = LABEL_PREFIX + "build-id"
LABEL_BUILD_NUMBER = LABEL_PREFIX + "build-number"
LABEL_DEFINITION = LABEL_PREFIX + "definition"
LABEL_REVISION = LABEL_PREFIX + "revision"
LABEL_REVISION_SHA = LABEL_PREFIX + "revision-sha256"
LABEL_SOURCE = LABEL_PREFIX + "source"


def validate_repository_name(value):
    if not REPOSITORY_COMPONENT_RE.match(value or ""):
        raise ValidationError(
            "Use lower-case letters and digits, separated by single dots, underscores or dashes "
            "(a valid repository name, e.g. web-os or edge.gateway)."
        )


def validate_repository(value):
    if len(value) > 255 or not REPOSITORY_RE.match(value or ""):
        raise ValidationError(
            "Give a repository as registry/path, e.g. quay.io/acme/web-os or 127.0.0.1:5000/platform/web-os "
            "(lower case, no tag or digest)."
        )


def validate_platforms(value):
    if not isinstance(value, list) or not value:
        raise ValidationError("Pick at least one platform, e.g. linux/amd64.")
    for platform in value:
        if not isinstance(platform, str) or not PLATFORM_RE.match(platform):
            raise ValidationError(f"{platform!r} is not a platform podman builds for (e.g. linux/amd64, linux/arm64).")
    if len(set(value)) != len(value):
        raise ValidationError("Each platform may appear once.")


def validate_build_args(value):
    if not isinstance(value, dict):
        raise ValidationError("Build args are NAME=value pairs.")
    for name, arg in value.items():
        if not BUILD_ARG_NAME_RE.match(name):
            raise ValidationError(f"{name!r} is not a valid build arg name (letters, digits and _, not starting with a digit).")
        if not isinstance(arg, str) or "\x00" in arg:
            raise ValidationError(f"The value of {name} must be text.")


def platform_architecture(platform):
    """linux/arm64 -> arm64; linux/arm/v7 -> arm."""
    return platform.split("/")[1]


def default_repository(team, name):
    return f"{settings.REGISTRY_URL}/{team.slug}/{name}"


# --- Image definitions -----------------------------------------------------------------------------------------------


class Schedule(models.TextChoices):
    NONE = "", "No schedule"
    DAILY = "daily", "Nightly"
    WEEKLY = "weekly", "Weekly"


class ImageDefinitionQuerySet(TeamScopedQuerySet):

    def with_latest_build(self):
        """Annotate `latest_build_id` (the newest build of any revision), for lists."""
        newest = Build.objects.filter(definition=models.OuterRef("pk")).order_by("-number").values("pk")[:1]
        return self.annotate(latest_build_id=models.Subquery(newest))


class ImageDefinition(models.Model):
    """A team's whole system as a Containerfile: what it is called, where its images go, which platforms it builds for."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="image_definitions")
    name = models.CharField(max_length=64, validators=[validate_repository_name],
                            help_text="A repository name: lower case, digits, . _ - (e.g. web-os).")
    description = models.TextField(blank=True)
    repository = models.CharField(max_length=255, validators=[validate_repository],
                                  help_text="Where builds are pushed, without a tag: registry/path.")
    platforms = models.JSONField(default=list, validators=[validate_platforms],
                                 help_text='e.g. ["linux/amd64"]; each platform builds on a builder of that architecture.')
    build_args = models.JSONField(default=dict, blank=True, validators=[validate_build_args],
                                  help_text="Passed to podman as --build-arg NAME=value, literally.")
    schedule = models.CharField(max_length=16, choices=Schedule.choices, blank=True, default=Schedule.NONE,
                                help_text="Rebuild the current revision on a schedule, to pick up base image updates.")
    next_scheduled_at = models.DateTimeField(null=True, blank=True)
    timeout_minutes = models.PositiveIntegerField(default=60, help_text="A build running longer is stopped and failed.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ImageDefinitionQuerySet.as_manager()

    class Meta:
        ordering = ["team__name", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="definition_name_unique_per_team")]
        indexes = [models.Index(fields=["schedule", "next_scheduled_at"])]

    def __str__(self):
        return f"{self.team.slug}/{self.name}"

    def get_absolute_url(self):
        return reverse("builds:definition_detail", args=[self.pk])

    @property
    def registry(self):
        return self.repository.split("/", 1)[0]

    def current_revision(self):
        return self.revisions.order_by("-number").first()


# --- Revisions -------------------------------------------------------------------------------------------------------


class ContextKind(models.TextChoices):
    NONE = "none", "Containerfile only"
    FILES = "files", "Files kept in the portal"
    GIT = "git", "Git repository"


class Revision(models.Model):
    """One immutable Containerfile of a definition, with its build context. Saved once, never changed."""

    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField(help_text="1, 2, 3... per definition.")
    containerfile = models.TextField()
    sha256 = models.CharField(max_length=64, db_index=True, help_text="Of the Containerfile text (UTF-8).")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="revisions")
    author_name = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    context_kind = models.CharField(max_length=8, choices=ContextKind.choices, default=ContextKind.NONE)
    git_url = models.CharField(max_length=500, blank=True)
    git_ref = models.CharField(max_length=200, blank=True, help_text="Branch, tag or commit.")
    git_subdir = models.CharField(max_length=300, blank=True, help_text="Sub-directory of the repository to build in.")
    warnings = models.JSONField(default=list, blank=True, help_text="Validation warnings shown when it was saved.")

    class Meta:
        ordering = ["definition", "-number"]
        constraints = [models.UniqueConstraint(fields=["definition", "number"], name="revision_number_unique")]
        indexes = [models.Index(fields=["context_kind", "git_url", "git_ref"])]

    def __str__(self):
        return f"{self.definition} r{self.number}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("A revision is immutable once saved: save a new revision instead.")
        super().save(*args, **kwargs)

    def get_absolute_url(self):
        return reverse("builds:revision_detail", args=[self.definition_id, self.number])

    @staticmethod
    def hash_text(text):
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def short_sha(self):
        return self.sha256[:12]

    def source_description(self):
        if self.context_kind == ContextKind.GIT:
            where = self.git_url + (f" @ {self.git_ref}" if self.git_ref else "")
            return where + (f" ({self.git_subdir})" if self.git_subdir else "")
        if self.context_kind == ContextKind.FILES:
            return f"{self.context_files.count()} file(s) kept in the portal"
        return "Containerfile only"


class ContextFile(models.Model):
    """A small file of a revision's build context, kept in the portal (immutable with its revision)."""

    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="context_files")
    path = models.CharField(max_length=255, help_text="Relative path in the build context, e.g. etc/motd.")
    content = models.BinaryField()
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    mode = models.PositiveIntegerField(default=0o644)

    class Meta:
        ordering = ["revision", "path"]
        constraints = [models.UniqueConstraint(fields=["revision", "path"], name="context_file_path_unique")]

    def __str__(self):
        return f"{self.revision}: {self.path}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Context files are immutable with their revision.")
        super().save(*args, **kwargs)


# --- Builds ----------------------------------------------------------------------------------------------------------


class BuildStatus(models.TextChoices):
    """What a build shows; derived from its run (pushing = running in phase "pushing")."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Building"
    PUSHING = "pushing", "Pushing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class BuildPhase:
    """Values of `Run.phase` while a build runs."""

    PREPARING = "preparing"
    BUILDING = "building"
    PUSHING = "pushing"
    INSPECTING = "inspecting"


class BuildQuerySet(TeamScopedQuerySet):
    team_path = "definition__team"

    def with_related(self):
        return self.select_related("run", "definition", "definition__team", "revision", "builder", "run__started_by")

    def active(self):
        return self.filter(run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING])

    def finished(self):
        return self.filter(run__status__in=FINISHED_STATUSES)

    def succeeded(self):
        return self.filter(run__status=RunStatus.SUCCEEDED).exclude(digest="")

    def in_registry(self):
        """Succeeded builds whose image retention has not deleted."""
        return self.succeeded().filter(image_deleted_at__isnull=True)

    def with_status(self, status):
        if status == BuildStatus.PUSHING:
            return self.filter(run__status=RunStatus.RUNNING, run__phase=BuildPhase.PUSHING)
        if status == BuildStatus.RUNNING:
            return self.filter(run__status=RunStatus.RUNNING).exclude(run__phase=BuildPhase.PUSHING)
        return self.filter(run__status=status)


class Build(models.Model):
    """One revision built for one platform and pushed; its digest is the image's identity from then on.

    A definition with several platforms builds a **manifest list**: a build row of its own (`is_manifest_list`, its
    platform "linux/amd64,linux/arm64") whose members are one build per platform, each on a builder of that
    architecture. Once every member succeeded, the list's run assembles their digests into a manifest list and pushes
    it; its digest is then what promotions copy and what stages hold (`builds.multiarch`).

    Status, timestamps, trigger, who started it, the log and the failure reason live on `run` (portal.Run).
    """

    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="builds")
    revision = models.ForeignKey(Revision, on_delete=models.PROTECT, related_name="builds")
    number = models.PositiveIntegerField(help_text="1, 2, 3... per definition; also the image tag build-N.")
    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="build")
    platform = models.CharField(max_length=200, default="linux/amd64",
                                help_text="os/arch; a manifest list's platforms joined by commas.")
    builder = models.ForeignKey(Builder, null=True, blank=True, on_delete=models.SET_NULL, related_name="builds")
    is_manifest_list = models.BooleanField(default=False, help_text="The manifest list of its members' images.")
    manifest_list = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="members",
                                      help_text="The manifest list this one platform's build is part of.")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    build_args = models.JSONField(default=dict, blank=True, help_text="As passed to podman, copied from the definition.")
    source_commit = models.CharField(max_length=64, blank=True, help_text="The git commit built, for git contexts.")
    # Results
    image_id = models.CharField(max_length=80, blank=True, help_text="Local image ID (podman --iidfile).")
    digest = models.CharField(max_length=80, blank=True, db_index=True, help_text="Registry manifest digest, sha256:…")
    repository = models.CharField(max_length=255, blank=True, help_text="Where it was pushed.")
    tags = models.JSONField(default=list, blank=True)
    size = models.BigIntegerField(null=True, blank=True, help_text="Bytes of the pushed layers (compressed).")
    labels = models.JSONField(default=dict, blank=True)
    architecture = models.CharField(max_length=16, blank=True)
    os = models.CharField(max_length=16, blank=True)
    base_image = models.CharField(max_length=500, blank=True, help_text="The final stage's FROM.")
    package_format = models.CharField(max_length=8, blank=True, help_text="rpm, dpkg, apk, or empty if none found.")
    packages = models.JSONField(default=dict, blank=True, help_text="{name: version} read from the image.")
    pushed_at = models.DateTimeField(null=True, blank=True)
    # Retention (builds.retention): a pinned image is never deleted; a deleted one keeps its row, for the record.
    pinned = models.BooleanField(default=False, help_text="Keep this image in the registry whatever the retention "
                                                          "policy says.")
    image_deleted_at = models.DateTimeField(null=True, blank=True, help_text="When retention deleted the image from "
                                                                             "the registry.")
    deleted_by_cleanup = models.ForeignKey("ImageCleanup", null=True, blank=True, on_delete=models.SET_NULL,
                                           related_name="deleted_builds")
    # Failure summary (filled when it fails): podman's STEP n/m, the last error lines and a hint.
    failed_step = models.CharField(max_length=500, blank=True)
    error_lines = models.TextField(blank=True)
    hint = models.CharField(max_length=500, blank=True)

    objects = BuildQuerySet.as_manager()

    class Meta:
        ordering = ["-run__created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["definition", "number"], name="build_number_unique")]

    def __str__(self):
        return f"{self.definition} build {self.number}"

    def get_absolute_url(self):
        return reverse("builds:build_page", args=[self.definition_id, self.number])

    @property
    def team(self):
        return self.definition.team

    @property
    def status(self):
        if self.run.status == RunStatus.RUNNING and self.run.phase == BuildPhase.PUSHING:
            return BuildStatus.PUSHING
        return BuildStatus(self.run.status)

    def get_status_display(self):
        return BuildStatus(self.status).label

    @property
    def trigger(self):
        return self.run.trigger

    @property
    def is_active(self):
        return self.run.is_active

    @property
    def succeeded(self):
        return self.run.status == RunStatus.SUCCEEDED and bool(self.digest)

    @property
    def image_ref(self):
        """The pushed image by digest (repository@sha256:...), the reference everything downstream uses."""
        return f"{self.repository}@{self.digest}" if self.digest else ""

    @property
    def short_digest(self):
        return short_digest(self.digest)

    @property
    def failure_headline(self):
        """The line of the failing step that says why (portal.failures), from the lines the build kept."""
        if not self.error_lines:
            return ""
        return failures.explain(self.error_lines, tool="podman", succeeded=False).headline

    @property
    def failure_detail(self):
        """The run's exit reason without the step (the build page shows the step as its heading)."""
        reason = self.run.exit_reason
        if self.failed_step:
            reason = reason.replace(f" at {self.failed_step}", "")
        return reason

    def tag_names(self):
        """The tags a build pushes: its number and its revision's short sha. A manifest list's member pushes its number
        only: the revision's tag is the list's, and builds of several platforms would take it from each other."""
        if self.manifest_list_id:
            return [f"build-{self.number}"]
        return [f"build-{self.number}", f"rev-{self.revision.short_sha}"]

    @property
    def platforms(self) -> list[str]:
        return self.platform.split(",")


def dashboard_counts(user, teams):
    """Counts for the dashboard tiles, over `teams` (already limited to what the user may see)."""
    return {
        "definitions": ImageDefinition.objects.filter(team__in=teams).count(),
        "builds": Build.objects.filter(definition__team__in=teams).count(),
    }


# --- Notifications ---------------------------------------------------------------------------------------------------
# The events builds send through the core's notifications (portal.notifications; registered in builds.apps, composed in
# builds.notifications). Releases have their own (builds.releases.models.PromotionEvent).


class BuildEvent(models.TextChoices):
    """What builds emit through the core's events (registered in builds.apps, composed in builds.notifications)."""

    BUILD_STARTED = "build.started", "Build started"
    BUILD_SUCCEEDED = "build.succeeded", "Build succeeded"
    BUILD_FAILED = "build.failed", "Build failed"
