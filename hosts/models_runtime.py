"""What changed on hosts since they booted their images, and what their stages say of it (`hosts.runtime`): a host's
last reading (`HostRuntime`), its changes one row each for the fleet view (`RuntimeChange`), and a stage's runtime
policy (`RuntimePolicy`). `hosts.models` exports them with the rest of the app's models.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone


class HostRuntime(models.Model):
    """What changed on a host since it booted its image, as last read (`hosts.runtime`): files in /etc that ostree's
    three-way merge carries (added, modified, deleted), packages that are not the image's, and the /usr overlay.

    Written only when a reading differs from the one before (`fingerprint`); each change also adds a timeline event."""

    host = models.OneToOneField("hosts.Host", on_delete=models.CASCADE, related_name="runtime")
    read_at = models.DateTimeField(null=True, blank=True, help_text="When it was last read, changed or not.")
    changed_at = models.DateTimeField(null=True, blank=True, help_text="When what was read last changed.")
    digest = models.CharField(max_length=80, blank=True, help_text="The booted digest it was compared with.")
    etc_changes = models.JSONField(default=list, blank=True, help_text="[[kind A/M/D, path], ...], the first ones.")
    etc_total = models.PositiveIntegerField(default=0, help_text="How many paths changed in all.")
    packages_added = models.JSONField(default=dict, blank=True, help_text="{name: version} not in the image.")
    packages_changed = models.JSONField(default=dict, blank=True, help_text="{name: [on the host, in the image]}.")
    packages_removed = models.JSONField(default=list, blank=True, help_text="Names the image has and the host not.")
    image_packages_known = models.BooleanField(default=False, help_text="Whether the image's package list was known.")
    usr_overlay = models.CharField(max_length=100, blank=True)
    etc_files = models.JSONField(default=dict, blank=True, help_text="{path: a diff against the image's version, secrets "
                                                                    "masked, or why there is none} (hosts.etcdiff).")
    error = models.CharField(max_length=500, blank=True, help_text="Why the last reading failed, if it did.")
    fingerprint = models.CharField(max_length=64, blank=True)

    has_changes = models.BooleanField(default=False, db_index=True, help_text="Whether anything changed (`has_drift`, "
                                                                             "stored for the host list's filter).")

    def __str__(self):
        return f"runtime of {self.host}"

    @property
    def has_drift(self):
        return bool(self.etc_total or self.packages_added or self.packages_changed or self.packages_removed
                    or self.usr_overlay)


class RuntimeDrift(models.TextChoices):
    """What a stage says of hosts changed at runtime (files in /etc, packages in a /usr overlay)."""

    ALLOWED = "allowed", "Allowed"
    WARNED = "warned", "Warned"
    FORBIDDEN = "forbidden", "Forbidden"


class DriftInRollouts(models.TextChoices):
    """What a rollout does with a host that is non-compliant (changed at runtime on a stage that forbids it)."""

    SKIP = "skip", "Skip it (it keeps its digest and its changes)"
    RESET = "reset", "Update it anyway (the new deployment drops the /usr overlay; /etc changes stay)"


class RuntimePolicyQuerySet(models.QuerySet):
    def for_stages(self, stage_ids):
        """{stage id: policy} of the stages that have one (others are `RuntimePolicy.DEFAULT`)."""
        return {policy.stage_id: policy for policy in self.filter(stage_id__in=list(stage_ids))}


class RuntimePolicy(models.Model):
    """What one stage says of its hosts changing at runtime: allowed (shown, nothing more), warned (shown as a warning)
    or forbidden (the host is non-compliant: marked on its page, the host list and the fleet view; rollouts skip or
    update it, `rollouts`; operators may reset it to its image). A stage without a row allows it."""

    stage = models.OneToOneField("releases.Stage", on_delete=models.CASCADE, related_name="runtime_policy")
    drift = models.CharField(max_length=16, choices=RuntimeDrift.choices, default=RuntimeDrift.ALLOWED,
                             help_text="Hosts of this stage changed at runtime (files in /etc, packages, a /usr "
                                       "overlay) are allowed, warned about, or non-compliant.")
    rollouts = models.CharField(max_length=16, choices=DriftInRollouts.choices, default=DriftInRollouts.SKIP,
                                help_text="When runtime changes are forbidden: what a rollout does with a "
                                          "non-compliant host.")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    objects = RuntimePolicyQuerySet.as_manager()

    def __str__(self):
        return f"runtime policy of {self.stage}: {self.drift}"


class RuntimeChangeKind(models.TextChoices):
    ETC = "etc", "File in /etc"
    PACKAGE_ADDED = "package_added", "Package not in the image"
    PACKAGE_CHANGED = "package_changed", "Package at another version"
    PACKAGE_REMOVED = "package_removed", "Package of the image removed"
    OVERLAY = "overlay", "/usr overlay"


class RuntimeChange(models.Model):
    """One change of a host's last reading (a path, a package, the overlay), a row each, so that the fleet view counts
    the common ones across a stage's hosts in the database ("/etc/chrony.conf changed on 40 of 200 hosts") instead of
    reading every host's reading. Rewritten with the reading (`hosts.runtime.runtime_record`); a host's go with it."""

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="runtime_changes")
    kind = models.CharField(max_length=16, choices=RuntimeChangeKind.choices)
    name = models.CharField(max_length=500, help_text="The /etc path or the package's name.")
    detail = models.CharField(max_length=200, blank=True, help_text="A, M or D for a path; the host's version.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "kind", "name"], name="runtime_change_once_per_host")]
        indexes = [models.Index(fields=["kind", "name"])]

    def __str__(self):
        return f"{self.host_id}: {self.kind} {self.name}"
