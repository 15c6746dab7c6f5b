"""The supply chain: a team's signing keys, the signatures made with them, what each stage requires, and the
vulnerabilities known for the packages the portal read from each image. docs/supply-chain.md tells the whole story.
"""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from builds.models import Build
from builds.releases.models import Stage
from portal import objectstore
from portal.crypto import EncryptedTextField
from portal.formatting import short_digest
from portal.models import Run, RunStatus, Team, TeamScopedQuerySet
from portal.registry import StoredFile

KEY_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,59}$")


def validate_key_name(value):
    if not KEY_NAME_RE.match(value or ""):
        raise ValidationError("A key's name: lower-case letters, digits, . _ - (e.g. release-2026).")


class KeyKind(models.TextChoices):
    GPG = "gpg", "GPG (simple signing, lookaside storage)"
    SIGSTORE = "sigstore", "Sigstore (attachments in the registry)"


class SigningKey(models.Model):
    """A team's signing key: a GPG key (skopeo `--sign-by`, signatures in the lookaside store) or a sigstore pair
    (ECDSA P-256 in cosign's format, `builds.supplychain.keys`; signatures as registry attachments). The private half
    and its passphrase are stored encrypted (portal.crypto) and leave the database only for a signing run, in a 0600
    directory that the run removes. A retired key signs nothing more; what it signed still verifies where a policy
    names it."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="signing_keys")
    name = models.CharField(max_length=60, validators=[validate_key_name])
    kind = models.CharField(max_length=10, choices=KeyKind.choices, default=KeyKind.GPG)
    public_key = models.TextField(help_text="Armored (GPG) or PEM (sigstore): what policy.json names.")
    private_key = EncryptedTextField(help_text="Armored GPG secret key, or cosign's encrypted PEM.")
    passphrase = EncryptedTextField(blank=True)
    fingerprint = models.CharField(max_length=64, help_text="The GPG fingerprint, or SHA-256 of the sigstore public "
                                                            "key's DER, in hex.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    imported = models.BooleanField(default=False)
    signs_new_builds = models.BooleanField(default=False, help_text="Sign every build of the team that succeeds.")
    retired_at = models.DateTimeField(null=True, blank=True)

    objects = TeamScopedQuerySet.as_manager()

    class Meta:
        ordering = ["team", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="signing_key_name_unique_per_team"),
            models.UniqueConstraint(fields=["team", "fingerprint"], name="signing_key_once_per_team"),
        ]

    def __str__(self):
        return self.name

    @property
    def short_fingerprint(self):
        return self.fingerprint[:16]

    @property
    def is_active(self):
        return self.retired_at is None


class SignatureQuerySet(TeamScopedQuerySet):
    team_path = "key__team"

    def with_related(self):
        return self.select_related("key", "key__team", "build", "build__definition", "build__definition__team", "run",
                                   "requested_by")

    def valid(self):
        """Signatures that were made: the signature was found where it was stored (`signed_at`). A rotation's run
        makes many, and may fail after some of them were made; they stand."""
        return self.filter(signed_at__isnull=False)

    def pending(self):
        return self.filter(signed_at__isnull=True, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING])


class Signature(models.Model):
    """One signing of a build's digest with a key: its run copies the digest onto the build's own tag with
    `--sign-by` (GPG: the signature goes to the lookaside store) or `--sign-by-sigstore-private-key` (an attachment in
    the registry). Made once the signature was found where it was stored (`signed_at`). The run is the signing's own,
    a key rotation's (which re-signs many digests), or a promotion's (a stage key signs the digest as it enters)."""

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="signatures")
    key = models.ForeignKey(SigningKey, on_delete=models.PROTECT, related_name="signatures")
    digest = models.CharField(max_length=80)
    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="signatures")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    requested_by_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    signed_at = models.DateTimeField(null=True, blank=True)

    objects = SignatureQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["digest"])]

    def __str__(self):
        return f"{short_digest(self.digest)} signed with {self.key}"

    @property
    def short_digest(self):
        return short_digest(self.digest)


class StageSigningPolicy(models.Model):
    """What a stage asks of signatures. `key`: the stage takes only digests signed with it; the promotion's copy runs
    under a policy.json that demands it (containers/image verifies, `builds.supplychain.services.copy_trust`). One key
    per stage, because sigstoreSigned takes exactly one (a rotation's old key is added for GPG while it overlaps).
    `entry_key`: the stage's own key, which signs every digest as the promotion copies it in ("prod signs what enters
    prod"); hosts tracking the stage verify that key."""

    stage = models.OneToOneField(Stage, on_delete=models.CASCADE, related_name="signing_policy")
    key = models.ForeignKey(SigningKey, null=True, blank=True, on_delete=models.PROTECT,
                            related_name="stage_policies")
    entry_key = models.ForeignKey(SigningKey, null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="stage_entry_policies",
                                  help_text="Signs every digest promoted into the stage, during the copy.")
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    set_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.stage} requires {self.key or 'no signature'}" + (
            f", signs with {self.entry_key}" if self.entry_key_id else "")

    @property
    def host_key(self):
        """The key hosts tracking the stage verify: the stage's own key when it signs what enters, else the key the
        stage requires."""
        return self.entry_key or self.key


class RotationStatus(models.TextChoices):
    RESIGNING = "resigning", "Re-signing the digests in use"
    OVERLAP = "overlap", "Re-signed: both keys verify until the date"
    DONE = "done", "Done: the old key is retired"


OPEN_ROTATIONS = (RotationStatus.RESIGNING, RotationStatus.OVERLAP)


class KeyRotationQuerySet(TeamScopedQuerySet):
    team_path = "old_key__team"

    def open(self):
        return self.filter(status__in=OPEN_ROTATIONS)

    def overlapping(self, now=None):
        """Rotations whose old key still verifies: re-signed, and before the date given."""
        return self.filter(status=RotationStatus.OVERLAP, old_until__gt=now or timezone.now())


class KeyRotation(models.Model):
    """Replacing `old_key` with `new_key`. A run (the one executor; log streamed, cancellable) re-signs with the new
    key every digest still in use (what the registered digest keepers keep: held by a stage or within its rollback
    window, booted, staged or kept for rollback by a host, ...). Once every one is re-signed, the stages that named
    the old key name the new one, and, for GPG keys, policies accept both until `old_until`; at that date the old key
    is retired. A digest that fails is named in the log and leaves the rotation re-signing: the old key stays until a
    resumed run re-signs it (digests already re-signed are skipped)."""

    old_key = models.ForeignKey(SigningKey, on_delete=models.PROTECT, related_name="rotations_from")
    new_key = models.ForeignKey(SigningKey, on_delete=models.PROTECT, related_name="rotations_to")
    old_until = models.DateTimeField(help_text="Until then the old key's signatures still verify (GPG keys).")
    status = models.CharField(max_length=10, choices=RotationStatus.choices, default=RotationStatus.RESIGNING)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.PROTECT, related_name="key_rotations",
                            help_text="The latest re-signing run (a resumed rotation gets a new one).")
    digests_total = models.PositiveIntegerField(default=0)
    digests_done = models.PositiveIntegerField(default=0)
    digests_failed = models.PositiveIntegerField(default=0)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    resigned_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    objects = KeyRotationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["old_key"], condition=Q(status__in=["resigning", "overlap"]),
                                    name="key_rotation_one_open_per_key"),
            models.CheckConstraint(condition=~Q(old_key=models.F("new_key")), name="key_rotation_to_another_key"),
        ]

    def __str__(self):
        return f"{self.old_key} -> {self.new_key}"

    @property
    def team(self):
        return self.old_key.team

    @property
    def percent(self):
        return int(100 * self.digests_done / self.digests_total) if self.digests_total else (
            100 if self.status != RotationStatus.RESIGNING else 0)


# --- SBOMs ----------------------------------------------------------------------------------------------------------


def sbom_storage():
    """The storage of the `SBOM_STORAGE` alias, followed as the settings change (portal.objectstore.aliased)."""
    return objectstore.aliased("SBOM_STORAGE")


class BuildSbom(models.Model):
    """A build's CycloneDX SBOM (`builds.supplychain.sbom`), written once when the build succeeds and kept in object
    storage (SBOM_STORAGE) beside the disk images, not in the database. It goes when retention deletes the build's
    image (`services.sboms_image_deleted`), never before; a backup records its name and a restore checks it is there."""

    build = models.OneToOneField(Build, on_delete=models.CASCADE, related_name="sbom")
    file = models.FileField(storage=sbom_storage, max_length=500)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"SBOM of {self.build_id}"

    @property
    def filename(self):
        """The name it downloads as."""
        return f"{self.build.definition.name}-build-{self.build.number}.cdx.json"


def stored_sboms():
    """The SBOMs' objects, as backups record them (`portal.registry.stored_files`)."""
    storage = getattr(settings, "SBOM_STORAGE", "default")
    for name, size in BuildSbom.objects.values_list("file", "size").iterator():
        yield StoredFile(kind="build SBOM", storage=storage, name=name, size=size)


# --- Vulnerabilities -------------------------------------------------------------------------------------------------


class AdvisoryFeed(models.Model):
    """Advisories imported from one source (an OSV or CSAF file, or a URL that beat reads every `refresh_hours`): each
    import replaces the feed's advisories in one transaction, so a feed is never half imported."""

    name = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=500, blank=True, help_text="Where it was read from (a path or URL).")
    imported_at = models.DateTimeField(null=True, blank=True)
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    advisory_count = models.PositiveIntegerField(default=0)
    url = models.CharField(max_length=500, blank=True, help_text="An http(s) URL beat reads the feed from (a mirror "
                                                                 "for a disconnected site); empty: imported by hand.")
    refresh_hours = models.PositiveSmallIntegerField(default=24, help_text="How often beat reads the URL.")
    checked_at = models.DateTimeField(null=True, blank=True, help_text="When the URL was last read, well or not.")
    last_error = models.TextField(blank=True, help_text="Why the last read of the URL imported nothing.")
    content_sha256 = models.CharField(max_length=64, blank=True, help_text="Of what was last imported: an unchanged "
                                                                           "feed is not imported again.")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    UNKNOWN = "unknown", "Unknown"


SEVERITY_ORDER = [Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.UNKNOWN]


class Advisory(models.Model):
    """One advisory of a feed (an OSV record): its id, the CVEs it names, how severe it is."""

    feed = models.ForeignKey(AdvisoryFeed, on_delete=models.CASCADE, related_name="advisories")
    identifier = models.CharField(max_length=100, help_text="The OSV id (e.g. DSA-5678-1 or CVE-2026-1234).")
    aliases = models.JSONField(default=list, blank=True)
    summary = models.CharField(max_length=500, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.UNKNOWN)
    published = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["identifier"]
        constraints = [models.UniqueConstraint(fields=["feed", "identifier"], name="advisory_unique_per_feed")]

    def __str__(self):
        return self.identifier

    @property
    def cves(self):
        return [name for name in [self.identifier, *self.aliases] if name.startswith("CVE-")]


class AffectedPackage(models.Model):
    """A package an advisory affects, in one ecosystem (dpkg, rpm or apk: the package formats the portal reads), with
    the version ranges as OSV gives them (`introduced`/`fixed` events, compared with the ecosystem's own rules)."""

    advisory = models.ForeignKey(Advisory, on_delete=models.CASCADE, related_name="packages")
    package_format = models.CharField(max_length=8)
    name = models.CharField(max_length=200, db_index=True)
    ranges = models.JSONField(default=list, help_text="[{introduced, fixed}], versions as strings; fixed may be empty.")
    versions = models.JSONField(default=list, blank=True, help_text="Versions listed as affected one by one.")

    class Meta:
        constraints = [models.CheckConstraint(condition=~Q(name=""), name="affected_package_named")]

    def __str__(self):
        return f"{self.name} ({self.package_format})"


class StageVulnerabilityPolicy(models.Model):
    """A stage that refuses promotions of a digest carrying a known vulnerability of `refuse_from` severity or worse
    (`builds.supplychain.gate.vulnerability_check`), unless an approver overrides it for that promotion, with a
    reason."""

    stage = models.OneToOneField(Stage, on_delete=models.CASCADE, related_name="vulnerability_policy")
    refuse_from = models.CharField(max_length=10, choices=[(s.value, s.label) for s in SEVERITY_ORDER[:4]],
                                   default=Severity.CRITICAL)
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    set_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.stage} refuses {self.refuse_from} vulnerabilities"

    def refuses(self, severity: str) -> bool:
        return severity in SEVERITY_ORDER and SEVERITY_ORDER.index(severity) <= SEVERITY_ORDER.index(self.refuse_from)


class VulnerabilityOverride(models.Model):
    """An approver let a promotion's digest into its stage despite the vulnerabilities its policy refuses, saying why:
    bound to the digest and to the advisories known then (a new one found later needs a new override)."""

    promotion = models.ForeignKey("releases.Promotion", on_delete=models.CASCADE, related_name="vulnerability_overrides")
    digest = models.CharField(max_length=80)
    advisories = models.JSONField(default=list, help_text="The identifiers overridden, as the check listed them.")
    reason = models.TextField()
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    approver_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"override of {len(self.advisories)} advisories for #{self.promotion_id} by {self.approver_name}"
