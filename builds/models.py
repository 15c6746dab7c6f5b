"""Image definitions, revisions, builds, builders, registry credentials, API tokens and git webhooks.

A team's **image definition** names a repository and its platforms; each **revision** is an immutable Containerfile (plus
its build context: a few small files, or a git URL) with its author and sha256; each **build** turns one revision into
an image for one platform, pushed to the repository, whose **digest** is the image's identity from then on. A build's
status is its `portal.Run`'s status (the run also holds timestamps, trigger, log, phase "building"/"pushing"/...),
so there is one status column and nothing to drift.
"""

import hashlib
import re
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from portal import failures
from portal.crypto import EncryptedTextField
from portal.formatting import short_digest
from portal.models import FINISHED_STATUSES, Run, RunStatus, Team, TeamScopedQuerySet

# A repository path component as the OCI distribution spec has it (lower case; separators . _ __ and runs of -).
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


# --- Builders --------------------------------------------------------------------------------------------------------


class BuilderKind(models.TextChoices):
    LOCAL = "local", "Local (the worker's own podman)"
    SSH = "ssh", "Remote over SSH"


class Builder(models.Model):
    """A machine with podman that runs builds: the worker itself, or a remote machine reached over SSH (paramiko)."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=BuilderKind.choices, default=BuilderKind.LOCAL)
    architecture = models.CharField(max_length=16, default="amd64", help_text="amd64, arm64, ppc64le, s390x...")
    capacity = models.PositiveSmallIntegerField(default=2, help_text="Builds it runs at once; more wait in the queue.")
    enabled = models.BooleanField(default=True)
    # SSH builders
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(default=22)
    username = models.CharField(max_length=100, blank=True)
    private_key = EncryptedTextField(blank=True, help_text="OpenSSH private key (stored encrypted).")
    host_key = models.TextField(blank=True, help_text="The pinned host key: 'ssh-ed25519 AAAA...'. Required for SSH.")
    # podman storage, when not the default (per-builder stores, test runs).
    podman_root = models.CharField(max_length=500, blank=True, help_text="podman --root, if not the default.")
    podman_runroot = models.CharField(max_length=500, blank=True, help_text="podman --runroot, if not the default.")
    work_dir = models.CharField(max_length=500, blank=True, help_text="Where build contexts go (default: a temp dir).")
    # health, from `podman version`
    health_ok = models.BooleanField(null=True, blank=True)
    health_detail = models.TextField(blank=True)
    podman_version = models.CharField(max_length=50, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    # Disk use of its podman store (builds.hygiene): pruned above the budget, keeping each definition's newest build.
    storage_budget_bytes = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Prune the podman store when its images take more than this; empty: never prune.")
    storage_used_bytes = models.BigIntegerField(null=True, blank=True, help_text="Images, containers and volumes.")
    storage_checked_at = models.DateTimeField(null=True, blank=True)
    storage_pruned_at = models.DateTimeField(null=True, blank=True)
    storage_note = models.CharField(max_length=500, blank=True, help_text="What the last check or prune did.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["architecture", "name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("builds:builder_list") + f"#builder-{self.pk}"

    def running_builds(self):
        return Build.objects.filter(builder=self, run__status=RunStatus.RUNNING)


# --- Registry credentials and API tokens -----------------------------------------------------------------------------


class RegistryCredential(models.Model):
    """A team's login to one registry (host[:port]), used to push and inspect. The password is stored encrypted.

    TLS is verified unless `insecure` is set, which is meant for a loopback development registry.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="registry_credentials")
    registry = models.CharField(max_length=255, help_text="host[:port], e.g. quay.io or 127.0.0.1:5000")
    username = models.CharField(max_length=200, blank=True)
    password = EncryptedTextField(blank=True)
    insecure = models.BooleanField(default=False, help_text="Plain HTTP / no TLS verification. Only for a loopback "
                                                            "development registry.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "registry"]
        constraints = [models.UniqueConstraint(fields=["team", "registry"], name="one_credential_per_team_registry")]

    def __str__(self):
        return f"{self.username or '(anonymous)'}@{self.registry}"


class GitCredential(models.Model):
    """A team's login to a git host over HTTPS: a user name and a token (stored encrypted), used for every revision of
    the team that builds from that host. git gets it through GIT_ASKPASS from a 0600 file on the builder, never on a
    command line or in a URL. An empty user name means the host takes the token as the user name
    (https://TOKEN@host)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="git_credentials")
    host = models.CharField(max_length=255, help_text="host[:port] of the git server, e.g. github.com")
    username = models.CharField(max_length=200, blank=True)
    token = EncryptedTextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "host"]
        constraints = [models.UniqueConstraint(fields=["team", "host"], name="one_git_credential_per_team_host")]

    def __str__(self):
        return f"{self.username or '(token)'}@{self.host}"


class ApiToken(models.Model):
    """A team's token for CI pipelines: triggers builds and reads their status with the developer's rights in that team.

    Only the sha256 of the token is stored; the token itself is shown once, when it is created.
    """

    PREFIX = "imp_"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "-created_at"]

    def __str__(self):
        return f"{self.team.slug}: {self.name} ({self.hint}…)"

    @classmethod
    def generate(cls):
        return cls.PREFIX + secrets.token_urlsafe(32)

    @staticmethod
    def hash_token(token):
        return hashlib.sha256(token.encode()).hexdigest()

    @property
    def active(self):
        return self.revoked_at is None


class GitWebhook(models.Model):
    """An inbound git push webhook for a team (GitHub or GitLab style, HMAC/secret-verified).

    A push rebuilds the team's definitions whose current revision builds from that repository and branch.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="git_webhooks")
    key = models.CharField(max_length=43, unique=True, help_text="The URL's unguessable part.")
    secret = EncryptedTextField(help_text="Shared secret: GitHub signs with it, GitLab sends it as a token.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    last_delivery_summary = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["team", "created_at"]

    def __str__(self):
        return f"{self.team.slug} webhook {self.key[:6]}…"


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

    Status, timestamps, trigger, who started it, the log and the failure reason live on `run` (portal.Run).
    """

    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="builds")
    revision = models.ForeignKey(Revision, on_delete=models.PROTECT, related_name="builds")
    number = models.PositiveIntegerField(help_text="1, 2, 3... per definition; also the image tag build-N.")
    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="build")
    platform = models.CharField(max_length=32, default="linux/amd64")
    builder = models.ForeignKey(Builder, null=True, blank=True, on_delete=models.SET_NULL, related_name="builds")
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
        """The tags a build pushes: its number and its revision's short sha."""
        return [f"build-{self.number}", f"rev-{self.revision.short_sha}"]


def dashboard_counts(user, teams):
    """Counts for the dashboard tiles, over `teams` (already limited to what the user may see)."""
    return {
        "definitions": ImageDefinition.objects.filter(team__in=teams).count(),
        "builds": Build.objects.filter(definition__team__in=teams).count(),
    }


# --- Image retention (builds/retention.py, builds/cleanup.py) --------------------------------------------------------


class ImageRetentionPolicy(models.Model):
    """Which of a definition's images stay in the registry: the newest `keep_last` builds, builds younger than
    `keep_days` days, and what each stage held in its last `keep_stage_history` promotions. A policy without a
    definition is the team's default. What is in use (a stage holds it, a host boots, stages or keeps it as rollback,
    a disk image or an open promotion refers to it, it is pinned) is kept whatever the numbers say: no policy can
    express deleting it."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="image_retention_policies")
    definition = models.OneToOneField(ImageDefinition, null=True, blank=True, on_delete=models.CASCADE,
                                      related_name="retention_policy")
    keep_last = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)],
                                            help_text="Keep the images of the newest N builds (at least 1).")
    keep_days = models.PositiveIntegerField(default=30, help_text="Keep images built fewer than D days ago; 0: none "
                                                                  "for their age alone.")
    keep_stage_history = models.PositiveIntegerField(
        default=3, help_text="Keep what each stage held in its last M promotions, so a stage rollback finds it (what "
                             "a stage holds now is always kept).")
    on_schedule = models.BooleanField(
        default=False, help_text="The daily retention pass deletes what the dry run lists, without a person confirming "
                                 "it (each deletion is audited and the pass reports it).")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team"], condition=models.Q(definition__isnull=True),
                                               name="one_default_image_retention_per_team")]

    def __str__(self):
        return (f"{self.definition or self.team.slug}: newest {self.keep_last}, {self.keep_days} days, "
                f"{self.keep_stage_history} stage promotions")


class ImageCleanupQuerySet(TeamScopedQuerySet):
    team_path = "definition__team"


class ImageCleanup(models.Model):
    """One application of a definition's retention: the digests the dry run listed and someone confirmed (or a
    schedule chose), which were deleted from the registry, which were found in use at the last moment and kept, and
    the registry's garbage collection after. Status, who, when and the log are on `run`."""

    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="cleanups")
    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="image_cleanup")
    requested = models.JSONField(default=list, help_text="The digests to delete, as the dry run listed them.")
    deleted = models.JSONField(default=list, blank=True)
    kept = models.JSONField(default=dict, blank=True, help_text="{digest: reasons}: in use when the run looked again.")
    failed = models.JSONField(default=dict, blank=True, help_text="{digest: why the registry did not delete it}.")
    bytes_expected = models.BigIntegerField(null=True, blank=True, help_text="What the dry run said would be freed.")
    garbage_collected = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ImageCleanupQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"Cleanup #{self.pk} of {self.definition}"

    def get_absolute_url(self):
        return reverse("builds:definition_retention", args=[self.definition_id])

    @property
    def team(self):
        return self.definition.team


# --- Notifications ---------------------------------------------------------------------------------------------------
# The events builds send through the core's notifications (portal.notifications; registered in builds.apps, composed in
# builds.notifications). Releases have their own (builds.releases.models.PromotionEvent).


class BuildEvent(models.TextChoices):
    """What builds emit through the core's events (registered in builds.apps, composed in builds.notifications)."""

    BUILD_STARTED = "build.started", "Build started"
    BUILD_SUCCEEDED = "build.succeeded", "Build succeeded"
    BUILD_FAILED = "build.failed", "Build failed"
