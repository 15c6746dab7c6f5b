"""Disk images: a built digest converted into disk images and installers with bootc-image-builder (or osbuild's
image-builder). `DiskImage` is one request (one or more types), each produced file is an `Artifact`, and a team keeps
reusable configurations as `DiskImagePreset`s. docs/disk-images.md describes the flow.

A conversion's status is its `portal.Run`'s status, as for builds.
"""

import secrets

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from builds.models import Build, Builder, ImageDefinition
from builds.releases.models import Stage
from portal.crypto import EncryptedTextField
from portal.formatting import short_digest
from portal.models import Run, RunStatus, Team, TeamScopedQuerySet
from portal.objectstore import aliased
from portal.registry import StoredFile

from .converters import CAUSE_LABELS


class DiskImageType(models.TextChoices):
    QCOW2 = "qcow2", "qcow2 (KVM, OpenStack, libvirt)"
    AMI = "ami", "AMI (Amazon EC2)"
    RAW = "raw", "raw disk (bare metal, dd)"
    BOOTC_INSTALLER = "bootc-installer", "Installer ISO (the image's own Anaconda)"
    VMDK = "vmdk", "VMDK (VMware)"
    VHD = "vhd", "VHD (Azure, Hyper-V)"
    GCE = "gce", "GCE tarball (Google Cloud)"
    ANACONDA_ISO = "anaconda-iso", "Installer ISO (Anaconda, deprecated)"


class RootFilesystem(models.TextChoices):
    XFS = "xfs", "xfs"
    EXT4 = "ext4", "ext4"
    BTRFS = "btrfs", "btrfs"


class DiskImageBackend(models.TextChoices):
    BIB = "bib", "bootc-image-builder"
    IMAGE_BUILDER = "image-builder", "osbuild image-builder"


def _new_key():
    return secrets.token_urlsafe(24)


class DiskImagePreset(models.Model):
    """A team's saved disk image configuration (the blueprint-format file bib reads), reused across requests."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="disk_image_presets")
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    config = models.JSONField(default=dict, blank=True, help_text="The configuration, as bootc-image-builder reads it.")
    source_format = models.CharField(max_length=8, default="toml", help_text="toml or json: how it is exported.")
    warnings = models.JSONField(default=list, blank=True, help_text="Validation warnings from when it was saved.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="disk_image_preset_name_unique")]

    def __str__(self):
        return f"{self.team.slug}: {self.name}"

    def get_absolute_url(self):
        return reverse("diskimages:preset_edit", args=[self.pk])


class CloudCredential(models.Model):
    """A team's AWS access key for AMI uploads; the secret is stored encrypted and reaches the builder in an env file."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="cloud_credentials")
    name = models.CharField(max_length=100)
    access_key_id = models.CharField(max_length=128)
    secret_access_key = EncryptedTextField()
    session_token = EncryptedTextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="cloud_credential_name_unique")]

    def __str__(self):
        return f"{self.name} (AWS {self.access_key_hint})"

    @property
    def access_key_hint(self):
        return f"…{self.access_key_id[-4:]}" if self.access_key_id else ""


class ArtifactRetention(models.Model):
    """How long a team keeps disk image files. The newest `keep_latest` conversions of each definition are always
    kept; older ones are deleted `keep_days` after they were made (0: never)."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="artifact_retention")
    keep_days = models.PositiveIntegerField(default=30, help_text="Delete files older than this many days; 0 keeps them.")
    keep_latest = models.PositiveIntegerField(default=3, help_text="Always keep the files of each image's newest "
                                                                   "conversions, however old.")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.team.slug}: {self.keep_days} days, newest {self.keep_latest}"


class OfADigest:
    """What disk images and boot tests say of the image they were made from: `repository` and `digest` fields."""

    @property
    def source_ref(self):
        return f"{self.repository}@{self.digest}"

    @property
    def short_digest(self):
        return short_digest(self.digest)


class DiskImageQuerySet(TeamScopedQuerySet):
    def with_related(self):
        return self.select_related("run", "team", "definition", "build", "stage", "builder", "run__started_by")

    def active(self):
        return self.filter(run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING])

    def for_digest(self, digest):
        """Conversions of one digest (for promotion cards and build pages)."""
        return self.filter(digest=digest)


class DiskImage(OfADigest, models.Model):
    """One request to convert a built digest into disk images: the types, architecture, root file system and the
    configuration used (copied from the preset, so later edits of the preset do not rewrite history).

    Status, timestamps, who asked, the log and the exit reason live on `run` (portal.Run), as for builds.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="disk_images")
    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="disk_images")
    build = models.ForeignKey(Build, null=True, blank=True, on_delete=models.SET_NULL, related_name="disk_images")
    stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="disk_images",
                              help_text="Set when the request named a stage: the digest is the one it held then.")
    repository = models.CharField(max_length=255)
    digest = models.CharField(max_length=80, db_index=True)
    types = models.JSONField(default=list)
    architecture = models.CharField(max_length=16)
    rootfs = models.CharField(max_length=8, choices=RootFilesystem.choices, default=RootFilesystem.XFS)
    backend = models.CharField(max_length=16, choices=DiskImageBackend.choices, default=DiskImageBackend.BIB)
    builder_image = models.CharField(max_length=300)
    preset = models.ForeignKey(DiskImagePreset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    preset_name = models.CharField(max_length=100, blank=True)
    config = models.JSONField(default=dict, blank=True)
    aws_bucket = models.CharField(max_length=63, blank=True)
    aws_region = models.CharField(max_length=32, blank=True)
    aws_ami_name = models.CharField(max_length=128, blank=True)
    aws_credential = models.ForeignKey(CloudCredential, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    builder = models.ForeignKey(Builder, null=True, blank=True, on_delete=models.SET_NULL, related_name="disk_images")
    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="disk_image")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    commands = models.JSONField(default=list, blank=True, help_text="The builder command lines that ran.")
    failure_cause = models.CharField(max_length=32, blank=True)
    failure_summary = models.TextField(blank=True)
    hint = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = DiskImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at"]), models.Index(fields=["definition", "-created_at"])]

    def __str__(self):
        return f"{self.definition.name} {', '.join(self.types)} #{self.pk}"

    def get_absolute_url(self):
        return reverse("diskimages:detail", args=[self.pk])

    @property
    def status(self):
        return self.run.status

    @property
    def is_active(self):
        return self.run.is_active

    def get_types_display(self):
        return ", ".join(self.types)

    def failure_label(self):
        return CAUSE_LABELS.get(self.failure_cause, "") if self.failure_cause else ""


class ArtifactQuerySet(TeamScopedQuerySet):
    team_path = "disk_image__team"

    def present(self):
        return self.filter(deleted_at__isnull=True)


def artifact_storage():
    """The storage of the `DISK_IMAGE_STORAGE` alias, followed as the settings change (portal.objectstore.aliased)."""
    return aliased("DISK_IMAGE_STORAGE")


class Artifact(models.Model):
    """One file a conversion produced, kept through Django's storage API and downloadable by its random `key`.

    `sha256` and `size` are of the stored bytes; `details` holds what the format check found (qemu-img's format and
    virtual size, the ISO's volume id and boot records).
    """

    disk_image = models.ForeignKey(DiskImage, on_delete=models.CASCADE, related_name="artifacts")
    image_type = models.CharField(max_length=16, choices=DiskImageType.choices)
    key = models.CharField(max_length=40, unique=True, default=_new_key, help_text="The download URL's unguessable part.")
    file = models.FileField(storage=artifact_storage, max_length=500, blank=True)
    filename = models.CharField(max_length=255, help_text="The name it downloads as.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    format = models.CharField(max_length=32, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ami_id = models.CharField(max_length=64, blank=True, help_text="The AMI the builder registered, for ami uploads.")
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_reason = models.CharField(max_length=200, blank=True)

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        ordering = ["disk_image", "image_type", "id"]
        indexes = [models.Index(fields=["deleted_at", "created_at"])]

    def __str__(self):
        return f"{self.filename} ({self.image_type})"

    def get_absolute_url(self):
        return reverse("diskimages:artifact_download", args=[self.key])

    @property
    def present(self):
        return self.deleted_at is None and bool(self.file)

    @property
    def checksum_name(self):
        """The `sha256sum -c` file stored beside the file, so the bucket describes itself without the database."""
        return f"{self.file.name}.sha256" if self.file else ""

    def checksum_text(self):
        return f"{self.sha256}  {self.filename}\n"


def stored_artifacts():
    """The files of the artifacts that are kept, as backups record them (`portal.registry.stored_files`)."""
    storage = getattr(settings, "DISK_IMAGE_STORAGE", "default")
    for name, size in Artifact.objects.present().exclude(file="").values_list("file", "size").iterator():
        yield StoredFile(kind="disk image artifact", storage=storage, name=name, size=size)


# --- Boot tests ------------------------------------------------------------------------------------------------------


class BootTestQuerySet(TeamScopedQuerySet):
    def with_related(self):
        return self.select_related("run", "team", "definition", "build", "run__started_by")

    def active(self):
        return self.filter(run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING])

    def of_digest(self, team, digest):
        """A team's boot tests of one digest, newest first: the first one is the verdict that counts."""
        return self.filter(team=team, digest=digest).order_by("-created_at", "-id")


class BootTest(OfADigest, models.Model):
    """One boot of a digest in a throwaway QEMU VM (docs/boot-tests.md): the image's own kernel and root file system,
    with the settings the VM had (copied when it was asked for, so the page says what ran). The verdict is the run's:
    succeeded is a pass; a failed run's reason says why, and `console_tail` keeps the console's last lines for the
    page and the approval card. Bound to the digest: a stage that wants a passing boot test reads the newest one of
    exactly that digest.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="boot_tests")
    definition = models.ForeignKey(ImageDefinition, on_delete=models.CASCADE, related_name="boot_tests")
    build = models.ForeignKey(Build, null=True, blank=True, on_delete=models.SET_NULL, related_name="boot_tests")
    repository = models.CharField(max_length=255)
    digest = models.CharField(max_length=80)
    run = models.OneToOneField(Run, on_delete=models.PROTECT, related_name="boot_test")
    accel = models.CharField(max_length=8, blank=True, help_text="kvm or tcg, once the worker picked one.")
    accel_note = models.CharField(max_length=200, blank=True, help_text="Why not KVM, when the worker could not use it.")
    firmware = models.CharField(max_length=8)
    memory_mb = models.PositiveIntegerField()
    cpus = models.PositiveSmallIntegerField()
    marker = models.CharField(max_length=200, help_text="The console pattern that means booted.")
    boot_seconds_limit = models.PositiveIntegerField()
    soak_seconds = models.PositiveIntegerField(default=0)
    ssh_checks = models.BooleanField(default=False, help_text="Log in over SSH once booted (and again after the soak).")
    test_script = models.TextField(blank=True, help_text="The definition's own check, run over SSH; exit 0 passes.")
    checks = models.JSONField(default=list, blank=True, help_text="[{round, name, passed, detail}] of the SSH checks.")
    kernel_version = models.CharField(max_length=100, blank=True)
    boot_seconds = models.FloatField(null=True, blank=True, help_text="From QEMU's start to the marker.")
    console_tail = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = BootTestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "digest", "-created_at"])]

    def __str__(self):
        return f"Boot test #{self.pk} of {self.definition.name} {self.short_digest}"

    def get_absolute_url(self):
        return reverse("diskimages:boot_test_detail", args=[self.pk])

    @property
    def passed(self):
        return self.run.status == RunStatus.SUCCEEDED

    @property
    def is_active(self):
        return self.run.is_active


class BootTestPlan(models.Model):
    """How one definition's images are boot-tested, where it differs from the settings (docs/boot-tests.md): its own
    marker, deadline and soak time, and whether the test logs in over SSH to check `bootc status`, `systemctl
    is-system-running` and the definition's own script. A boot test copies these when it is asked for."""

    definition = models.OneToOneField(ImageDefinition, on_delete=models.CASCADE, related_name="boot_test_plan")
    marker = models.CharField(max_length=200, blank=True,
                              help_text="A regular expression a console line matches once booted; empty: "
                                        "the portal's BOOT_TEST_MARKER.")
    boot_seconds = models.PositiveIntegerField(null=True, blank=True,
                                               help_text="From the VM's start to the marker; empty: BOOT_TEST_BOOT_SECONDS.")
    soak_seconds = models.PositiveIntegerField(null=True, blank=True,
                                               help_text="How long the VM stays up after the marker, the checks running "
                                                         "again at its end; empty: BOOT_TEST_SOAK_SECONDS.")
    ssh_checks = models.BooleanField(default=False,
                                     help_text="Log in over SSH with a key made for the run: bootc status must report "
                                               "the digest, systemctl is-system-running must not say degraded.")
    test_script = models.TextField(blank=True, max_length=20000,
                                   help_text="A shell script run as root in the VM over SSH (with the checks on); "
                                             "exit 0 passes.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    def __str__(self):
        return f"Boot test plan of {self.definition}"
