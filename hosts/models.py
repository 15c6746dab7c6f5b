"""Hosts, their bootc state, their history and the actions taken on them.

- `TeamSSHKey`: the ed25519 key pair a team's hosts trust (private key encrypted at rest).
- `JumpHost`: an SSH bastion a team reaches some hosts through (its host key is pinned too).
- `Host`: one machine: where it is, how to log in, the host key an admin confirmed, what it tracks, and the latest parsed
  `bootc status` denormalised onto the row, so lists of 10,000 hosts filter and page without touching snapshots.
- `HostSnapshot`: a `bootc status` that differed from the previous one: raw output and parsed form.
- `HostEvent`: the timeline: every difference between two snapshots, reachability and host-key changes, and actions.
- `HostAction`: an operator's upgrade, switch, rollback or reboot; its log is a `portal.Run`. At most one active per host,
  enforced by a partial unique index.
- `ReferenceDigest`: what an image reference (a stage tag) resolves to, per architecture: the yardstick for drift.
- `EnrollmentToken`: what a host that reports in (behind NAT, unreachable over SSH) presents once to enroll into a team
  and stage; only its hash is stored.
- `HostRuntime`, `RuntimeChange`, `RuntimePolicy` (in `hosts/models_runtime.py`): what changed on a host since it booted
  its image, and what its stage says of it.

State changes live in `hosts.services`; nothing here writes on save.
"""


from django.conf import settings
from django.db import models
from django.db.models import Case, Count, F, Q, When
from django.urls import reverse
from django.utils import timezone

from portal import ssh
from portal.crypto import EncryptedTextField
from portal.formatting import short_digest
from portal.hashedsecrets import HashedSecret
from portal.models import ACTIVE_STATUSES, Membership, Run, Team

from .models_runtime import (  # noqa: F401 - the app's models are imported from hosts.models
    DriftInRollouts,
    HostRuntime,
    RuntimeChange,
    RuntimeChangeKind,
    RuntimeDrift,
    RuntimePolicy,
    RuntimePolicyQuerySet,
)

# The tallies live with their reads; importing them here is what registers them as the app's models.
from .tallies import DigestTally, HostTally, tally_counts  # noqa: F401


class TeamSSHKey(models.Model):
    """The key pair the portal logs in with on a team's hosts. The public half goes into `authorized_keys` or a
    kickstart `sshkey` line; the private half never leaves the portal and is shown to nobody."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="ssh_key")
    public_key = models.TextField(help_text="ssh-ed25519 AAAA... portal-<team>")
    private_key = EncryptedTextField()
    fingerprint = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    def __str__(self):
        return f"SSH key of {self.team} ({self.fingerprint})"

    def kickstart_line(self, username="root"):
        return f"sshkey --username={username} \"{self.public_key}\""


class JumpHost(models.Model):
    """An SSH bastion. Hosts behind it are reached through a `direct-tcpip` channel; its key is pinned like a host's."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="jump_hosts")
    name = models.CharField(max_length=100)
    address = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=22)
    ssh_user = models.CharField(max_length=64, default="root")
    host_key = models.TextField(blank=True, help_text="The confirmed host key: `type base64`.")

    class Meta:
        ordering = ["team", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="jump_host_name_unique_per_team")]

    def __str__(self):
        return f"{self.name} ({self.address}:{self.port})"

    @property
    def fingerprint(self):
        return ssh.fingerprint(self.host_key) if self.host_key else ""


class HostState(models.TextChoices):
    """One word for where a host stands, most urgent first. Stored on the row so lists filter on an index."""

    HOST_KEY_CHANGED = "host_key_changed", "Host key changed"
    UNREACHABLE = "unreachable", "Unreachable"
    AUTH_FAILED = "auth_failed", "Login refused"
    UNREADABLE = "unreadable", "Status unreadable"
    NOT_BOOTC = "not_bootc", "Not bootc"
    ROLLED_BACK = "rolled_back", "Rolled back"
    UPDATE_STAGED = "update_staged", "Update staged"
    DRIFT = "drift", "Drift"
    UP_TO_DATE = "up_to_date", "Up to date"
    RUNNING = "running", "Running"
    NEW = "new", "Not read yet"


STATE_HELP = {
    HostState.HOST_KEY_CHANGED: "The host presented a different SSH host key. The portal refuses to talk to it until an "
                                "admin confirms the new key.",
    HostState.UNREACHABLE: "The last attempts to connect failed; the portal retries with growing pauses.",
    HostState.AUTH_FAILED: "The host refused the team's SSH key: add the public key to authorized_keys.",
    HostState.UNREADABLE: "bootc answered, but with something that is not a status document; the raw output is kept.",
    HostState.NOT_BOOTC: "The host did not boot a bootc image.",
    HostState.ROLLED_BACK: "The host went back to an earlier deployment.",
    HostState.UPDATE_STAGED: "A new deployment is staged; the host boots it at its next reboot.",
    HostState.DRIFT: "The host boots a digest other than the one its stage holds.",
    HostState.UP_TO_DATE: "The host boots the digest its stage holds.",
    HostState.RUNNING: "The host runs a bootc image; there is no stage digest to compare it with.",
    HostState.NEW: "The portal has not read this host yet.",
}

# The signature bootc writes on an image reference it pulled with --enforce-container-sigpolicy.
ENFORCED_SIGNATURE = "containerPolicy"
PROBLEM_STATES = (HostState.HOST_KEY_CHANGED, HostState.UNREACHABLE, HostState.AUTH_FAILED, HostState.UNREADABLE)


class HostMode(models.TextChoices):
    """How the portal learns a host's state: it logs in over SSH, or the host's agent reports in over HTTPS."""

    SSH = "ssh", "SSH (the portal polls it)"
    REPORT = "report", "Reports in (agent)"


def label_q(label):
    """Hosts that carry `label` among their space-separated labels."""
    label = label.strip()
    return (Q(labels=label) | Q(labels__startswith=f"{label} ") | Q(labels__endswith=f" {label}")
            | Q(labels__contains=f" {label} "))


class HostQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Hosts of the user's teams; every host for help-desk users and superusers."""
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser or user.is_helpdesk:
            return self
        return self.filter(team__in=Membership.objects.filter(user=user).values("team"))

    def with_label(self, label):
        return self.filter(label_q(label))

    def search(self, text):
        """Hosts whose name or address contains `text`, that carry it as a label, or that boot, stage or keep for
        rollback a digest starting with it (sha256:... or its first hex digits, at least six): the help desk's search."""
        text = (text or "").strip()
        if not text:
            return self
        match = Q(name__icontains=text) | Q(address__icontains=text) | label_q(text)
        digest = text.lower().removeprefix("sha256:")
        if len(digest) >= 6 and all(c in "0123456789abcdef" for c in digest):
            prefix = "sha256:" + digest
            match |= (Q(booted_digest__startswith=prefix) | Q(staged_digest__startswith=prefix)
                      | Q(rollback_digest__startswith=prefix))
        return self.filter(match)

    def drifting(self):
        return self.filter(drifting=True)

    def changed_at_runtime(self):
        """Hosts whose last reading found something changed since they booted their image (`HostRuntime`)."""
        return self.filter(runtime__has_changes=True)

    def non_compliant(self):
        """Hosts changed at runtime on a stage whose runtime policy forbids it (`RuntimePolicy`)."""
        return self.filter(runtime__has_changes=True, stage__runtime_policy__drift=RuntimeDrift.FORBIDDEN)

    def update_available(self):
        """Hosts whose `bootc upgrade --check` found an update (cachedUpdate) that is not staged yet: the tally's
        `update_available` (migration 0006 computes it the same way)."""
        return self.exclude(update_digest="").filter(staged_digest="")

    def enforcing(self):
        """Hosts whose booted image bootc verified under the container policy (pulled with
        --enforce-container-sigpolicy: `containerPolicy`): the tally's `enforcing` (migration 0010 computes it the
        same way)."""
        return self.filter(booted_signature=ENFORCED_SIGNATURE)

    def not_enforcing(self):
        return self.exclude(booted_signature=ENFORCED_SIGNATURE)

    def due(self, now=None):
        """Hosts whose next poll is due (and whose key is confirmed)."""
        now = now or timezone.now()
        return self.exclude(host_key="").filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))

    def running_digest(self, digest):
        """Hosts booting `digest` (a per-architecture manifest digest): "who runs this image"."""
        return self.filter(booted_digest=digest)

    def by_digest(self, digests):
        """{digest: number of hosts booting it} for a list of digests (or a queryset of them, used as a subquery), in
        one query (for build and definition pages)."""
        if not isinstance(digests, models.QuerySet):
            digests = list(digests)
        rows = self.filter(booted_digest__in=digests).values("booted_digest").annotate(n=Count("id")).order_by()
        return {row["booted_digest"]: row["n"] for row in rows}

    def following(self, references, stage=None):
        """Hosts that follow one of `references` (a stage's tag in the team's repositories: `Stage.reference(d)`), by
        what they were told to track or, when told nothing, what they report; and, with `stage`, hosts assigned to it."""
        references = list(references)
        following = Q(tracked_image__in=references) | Q(tracked_image="", spec_image__in=references)
        return self.filter(following | Q(stage=stage) if stage is not None else following)

    def count_following(self, references):
        """{reference: number of hosts following it} for `references`, in one query."""
        rows = (self.following(references)
                .annotate(followed=Case(When(tracked_image="", then=F("spec_image")), default=F("tracked_image")))
                .values("followed").annotate(n=Count("id")).order_by())
        return {row["followed"]: row["n"] for row in rows}


class Host(models.Model):
    """One machine running (or meant to run) a team's image."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="hosts")
    name = models.CharField(max_length=200)
    address = models.CharField(max_length=255, help_text="DNS name or IP address")
    port = models.PositiveIntegerField(default=22)
    ssh_user = models.CharField("SSH user", max_length=64, default="root",
                                help_text="root, or a user allowed to run bootc with sudo without a password")
    jump_host = models.ForeignKey(JumpHost, null=True, blank=True, on_delete=models.PROTECT, related_name="hosts")
    labels = models.CharField(max_length=500, blank=True, db_index=True,
                              help_text="Space-separated words, e.g. `web eu-west rack=12`.")
    stage = models.ForeignKey("releases.Stage", null=True, blank=True, on_delete=models.SET_NULL, related_name="hosts")
    tracked_image = models.CharField(max_length=512, blank=True,
                                     help_text="The image reference the host tracks, e.g. registry/team/web-os:prod.")
    created_at = models.DateTimeField(default=timezone.now)

    # Trust.
    host_key = models.TextField(blank=True, help_text="The confirmed host key (`type base64`); empty until confirmed.")
    host_key_confirmed_at = models.DateTimeField(null=True, blank=True)
    host_key_confirmed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                              related_name="+")
    offered_host_key = models.TextField(blank=True, help_text="A key the host presented that nobody has confirmed.")
    offered_host_key_at = models.DateTimeField(null=True, blank=True)

    # The latest state, denormalised from the latest snapshot and poll.
    state = models.CharField(max_length=20, choices=HostState.choices, default=HostState.NEW, db_index=True)
    drifting = models.BooleanField(default=False, db_index=True)
    rolled_back = models.BooleanField(default=False, help_text="The last deployment change was a rollback.")
    is_bootc = models.BooleanField(default=False)
    spec_image = models.CharField(max_length=512, blank=True, help_text="spec.image as the host reports it")
    booted_digest = models.CharField(max_length=80, blank=True, db_index=True)
    booted_version = models.CharField(max_length=200, blank=True)
    booted_image = models.CharField(max_length=512, blank=True)
    architecture = models.CharField(max_length=32, blank=True)
    staged_digest = models.CharField(max_length=80, blank=True, db_index=True)
    staged_version = models.CharField(max_length=200, blank=True)
    rollback_digest = models.CharField(max_length=80, blank=True, db_index=True)
    rollback_version = models.CharField(max_length=200, blank=True)
    rollback_queued = models.BooleanField(default=False)
    update_digest = models.CharField(max_length=80, blank=True, help_text="cachedUpdate from `bootc upgrade --check`")
    booted_signature = models.CharField(max_length=100, blank=True, help_text="How bootc verified the booted image: "
                                        "the signature of its image reference in bootc status (containerPolicy: "
                                        "enforced)")
    update_version = models.CharField(max_length=200, blank=True)
    expected_digest = models.CharField(max_length=80, blank=True, help_text="What the tracked reference resolves to for "
                                                                            "this host's architecture")
    status = models.JSONField(default=dict, blank=True, help_text="The latest parsed status")
    status_hash = models.CharField(max_length=64, blank=True)
    raw_status = models.TextField(blank=True, help_text="The latest raw output of bootc status")
    status_at = models.DateTimeField(null=True, blank=True, help_text="When the status was last read")

    # Polling.
    last_poll_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    reachable = models.BooleanField(default=True)
    failures = models.PositiveIntegerField(default=0, help_text="Failed polls in a row (for the backoff)")
    last_error = models.TextField(blank=True)
    last_error_kind = models.CharField(max_length=32, blank=True)

    # The last action, to attribute what the next polls see.
    last_action = models.ForeignKey("HostAction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    # Reporting in (mode "report"): the host's own credential (only its sha256), and an admin's approval.
    mode = models.CharField(max_length=8, choices=HostMode.choices, default=HostMode.SSH)
    agent_secret_hash = models.CharField(max_length=64, blank=True, default="")
    enrolled_with = models.ForeignKey("EnrollmentToken", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="hosts")
    approved_at = models.DateTimeField(null=True, blank=True, help_text="When an admin (or the enrollment token) "
                                                                        "approved a host that reports in")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    objects = HostQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="host_name_unique_per_team"),
            models.UniqueConstraint(fields=["agent_secret_hash"], condition=~Q(agent_secret_hash=""),
                                    name="host_agent_secret_unique"),
        ]
        indexes = [
            # The list's order: pages through 10,000 hosts without sorting them. With the team in the index, a deep
            # page finds its 50 ids from the index alone (PostgreSQL), then reads just those rows (hosts.views).
            models.Index(fields=["name", "id"], include=["team"], name="hosts_host_list_order"),
            models.Index(fields=["team", "name"]),
            models.Index(fields=["team", "state"]),
            models.Index(fields=["stage", "state"]),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("hosts:host_detail", args=[self.pk])

    @property
    def label_list(self):
        return self.labels.split() if self.labels else []

    @property
    def reference(self):
        """The reference the host should be on: what it was told to track, else what it reports."""
        return self.tracked_image or self.spec_image

    @property
    def host_key_fingerprint(self):
        return ssh.fingerprint(self.host_key) if self.host_key else ""

    @property
    def offered_fingerprint(self):
        return ssh.fingerprint(self.offered_host_key) if self.offered_host_key else ""

    @property
    def trusted(self):
        """Whether the portal acts on the host: a confirmed host key (SSH), or an admin's approval (reporting in)."""
        if self.mode == HostMode.REPORT:
            return self.approved_at is not None
        return bool(self.host_key)

    @property
    def reports_in(self):
        return self.mode == HostMode.REPORT

    @property
    def pending_approval(self):
        return self.mode == HostMode.REPORT and self.approved_at is None

    def state_help(self):
        return STATE_HELP.get(self.state, "")

    def boots_next(self):
        """What the next boot brings, in plain words."""
        if self.state == HostState.NEW:
            return "Not known yet: the portal has not read this host."
        if not self.booted_digest and not self.staged_digest:
            return "Not known: the host did not report a bootc deployment."
        if self.rollback_queued and self.rollback_digest:
            return (f"The rollback deployment {short_digest(self.rollback_digest, missing='?')}"
                    f"{_v(self.rollback_version)}: a rollback is queued.")
        if self.staged_digest:
            return f"The staged update {short_digest(self.staged_digest, missing='?')}{_v(self.staged_version)}."
        return (f"The same deployment it runs now, {short_digest(self.booted_digest, missing='?')}"
                f"{_v(self.booted_version)}: nothing is staged.")

    def status_age(self, now=None):
        if not self.status_at:
            return None
        return (now or timezone.now()) - self.status_at


def _v(version):
    return f" (version {version})" if version else ""


class HostSnapshot(models.Model):
    """A `bootc status` that differed from the one before: the raw output and what the parser made of it."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="snapshots")
    taken_at = models.DateTimeField(default=timezone.now)
    raw = models.TextField(help_text="The output as text: a NUL or a byte that is not UTF-8 shows as U+FFFD.")
    raw_bytes = models.BinaryField(blank=True, default=b"", help_text="The output byte for byte, kept only when the "
                                                                      "text above is not exactly what the host printed.")
    parsed = models.JSONField(null=True, blank=True, help_text="null when the output was unreadable")
    error = models.TextField(blank=True)
    status_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-taken_at", "-id"]
        indexes = [models.Index(fields=["host", "-taken_at"])]

    def __str__(self):
        return f"{self.host} at {self.taken_at:%Y-%m-%d %H:%M:%S}"


class EventKind(models.TextChoices):
    FIRST_SEEN = "first_seen", "First status"
    UPDATE_AVAILABLE = "update_available", "Update available"
    STAGED = "staged", "Update staged"
    UNSTAGED = "unstaged", "Staged update discarded"
    BOOTED = "booted", "New deployment booted"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ROLLBACK_QUEUED = "rollback_queued", "Rollback queued"
    ROLLBACK_CANCELLED = "rollback_cancelled", "Queued rollback undone"
    SWITCHED = "switched", "Image switched"
    PINNED = "pinned", "Deployment pinned"
    UNPINNED = "unpinned", "Deployment unpinned"
    UNREACHABLE = "unreachable", "Became unreachable"
    REACHABLE = "reachable", "Reachable again"
    HOST_KEY_CHANGED = "host_key_changed", "Host key changed"
    HOST_KEY_CONFIRMED = "host_key_confirmed", "Host key confirmed"
    UNREADABLE = "unreadable", "Status unreadable"
    RUNTIME_CHANGED = "runtime_changed", "Changed on the host"
    ACTION = "action", "Action"


class HostEvent(models.Model):
    """One entry of a host's timeline."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=24, choices=EventKind.choices)
    summary = models.CharField(max_length=500)
    digest = models.CharField(max_length=80, blank=True)
    version = models.CharField(max_length=200, blank=True)
    previous_digest = models.CharField(max_length=80, blank=True)
    previous_version = models.CharField(max_length=200, blank=True)
    automatic = models.BooleanField(default=False, help_text="Done by the host itself (e.g. greenboot), not a person")
    action = models.ForeignKey("HostAction", null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["host", "-at"]), models.Index(fields=["kind", "-at"])]

    def __str__(self):
        return f"{self.host}: {self.summary}"


class ActionKind(models.TextChoices):
    UPGRADE_CHECK = "upgrade_check", "Check for an update"
    UPGRADE_STAGE = "upgrade_stage", "Stage the update"
    UPGRADE_APPLY = "upgrade_apply", "Upgrade and reboot"
    SWITCH = "switch", "Switch image"
    SWITCH_APPLY = "switch_apply", "Switch image and reboot"
    ROLLBACK = "rollback", "Roll back at next boot"
    ROLLBACK_APPLY = "rollback_apply", "Roll back and reboot"
    REBOOT = "reboot", "Reboot"
    RUNTIME_RESET = "runtime_reset", "Reset to the image"


REBOOTING_ACTIONS = (ActionKind.UPGRADE_APPLY, ActionKind.SWITCH_APPLY, ActionKind.ROLLBACK_APPLY, ActionKind.REBOOT,
                     ActionKind.RUNTIME_RESET)


class HostActionQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)

    def running(self):
        """Actions still at work: active, and their run not ended (a reaped run's action holds the host only until the
        next request releases it; nobody should read it as running)."""
        return self.filter(active=True, run__status__in=ACTIVE_STATUSES)


class HostAction(models.Model):
    """An operator's action on one host. Its log and status live in `run`; `active` is true until it ends, and the
    database allows one active action per host."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="actions")
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="host_action")
    kind = models.CharField(max_length=20, choices=ActionKind.choices)
    image = models.CharField(max_length=512, blank=True, help_text="The target of a switch")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="host_actions")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    outcome = models.TextField(blank=True)

    objects = HostActionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["host"], condition=Q(active=True), name="one_active_action_per_host"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} on {self.host}"

    @property
    def reboots(self):
        return self.kind in REBOOTING_ACTIONS


class ReferenceDigest(models.Model):
    """What an image reference (usually a stage tag) resolves to, per architecture ("" is the top-level digest).

    Filled by the poller from the registry, and by promotions when they move a tag (`drift.reference_digests_set`).
    """

    reference = models.CharField(max_length=512)
    architecture = models.CharField(max_length=32, blank=True)
    digest = models.CharField(max_length=80)
    version = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=32, default="registry")

    class Meta:
        ordering = ["reference", "architecture"]
        constraints = [models.UniqueConstraint(fields=["reference", "architecture"], name="one_digest_per_ref_arch")]

    def __str__(self):
        return f"{self.reference} [{self.architecture or 'index'}] = {self.digest}"


class EnrollmentToken(HashedSecret, models.Model):
    """What a host that reports in presents once, from its first boot, to join a team (and a stage): single- or
    N-use, with an expiry. Only the sha256 is stored; the token is shown once, when it is made. A host enrolled with it
    waits for an admin's approval unless the token pre-approves it."""

    PREFIX = "ime_"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="enrollment_tokens")
    stage = models.ForeignKey("releases.Stage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. `edge appliances, batch 3`.")
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    uses_allowed = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()
    pre_approved = models.BooleanField(default=False, help_text="Hosts enrolled with it report at once, without an "
                                                                "admin's approval.")
    labels = models.CharField(max_length=500, blank=True, help_text="Labels the enrolled hosts get.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    def refusal(self, now=None):
        """Why the token cannot enroll a host now ("" when it can)."""
        now = now or timezone.now()
        if self.revoked_at is not None:
            return "The enrollment token was revoked."
        if self.expires_at <= now:
            return "The enrollment token has expired."
        if self.uses >= self.uses_allowed:
            return ("The enrollment token was already used." if self.uses_allowed == 1 else
                    f"The enrollment token was used {self.uses} times, all it allows.")
        return ""

    @property
    def uses_left(self):
        return max(0, self.uses_allowed - self.uses)


def lands_on_host_search(user) -> bool:
    """Help-desk users who belong to no team: finding a caller's host is their job, so they land on the host search."""
    return bool(user.is_helpdesk) and not Membership.objects.filter(user=user).exists()


def dashboard_counts(user, teams):
    """Counts for the dashboard tiles, over `teams` (already limited to what the user may see), from the tally."""
    counts = tally_counts(teams.values_list("pk", flat=True) if hasattr(teams, "values_list") else
                          [t.pk for t in teams])
    return {"hosts": sum(counts.values()),
            "hosts_drifting": sum(n for (_, _, _, drifting), n in counts.items() if drifting)}
