"""Builders: the machines (this one, or remote over SSH) a build or a conversion runs on."""


from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from portal.crypto import EncryptedTextField
from portal.models import RunStatus

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
        return self.builds.filter(run__status=RunStatus.RUNNING)
