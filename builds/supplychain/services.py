"""Every state change of the supply chain, written once: signing keys, signature requests, what a stage requires, and
advisory feed imports. Views, tasks and management commands call these. What a worker does to sign is in `signing`.

`copy_trust` is what releases asks (through `portal.registry`, "promotion.copy_trust") before it copies a digest to a
stage: the policy.json that makes containers/image refuse a digest not signed with the stage's key.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from builds import registry
from builds.models import Build
from builds.releases.apply import ApplyFailed, CopySigning, CopyTrust
from builds.releases.gate import approval_refusal
from builds.releases.models import Promotion, PromotionStatus, Stage
from portal import objectstore
from portal.access import check_team_action
from portal.formatting import short_digest
from portal.models import Action, RunKind, Team, User
from portal.services import audit, run_create, run_enqueue

from . import gate, gpg, keys, notifications, rotation, sbom, signing, tasks, trust, vulns
from .models import (
    SEVERITY_ORDER,
    AdvisoryFeed,
    BuildSbom,
    KeyKind,
    KeyRotation,
    Signature,
    SigningKey,
    StageSigningPolicy,
    StageVulnerabilityPolicy,
    VulnerabilityOverride,
    validate_key_name,
)

log = logging.getLogger(__name__)


# --- Keys ------------------------------------------------------------------------------------------------------------


def signing_key_generate(*, team: Team, user: User, name: str, kind: str = KeyKind.GPG, request=None) -> SigningKey:
    """A new key for `team` (team admins): a GPG key (ed25519), or a sigstore pair (ECDSA P-256, cosign's format)."""
    check_team_action(user, team, Action.ADMIN)
    validate_key_name((name or "").strip())
    if kind == KeyKind.GPG:
        try:
            made = gpg.generate(f"{team.name} {name} <{team.slug}.{name}@portal.invalid>")
        except gpg.GpgFailed as exc:
            raise ValidationError(f"The key could not be made: {exc}") from None
        pair = keys.KeyPair(private_pem=made.private_key, public_pem=made.public_key, passphrase="")
        return _key_store(team=team, user=user, name=name, pair=pair, kind=kind, fingerprint=made.fingerprint,
                          imported=False, request=request)
    if kind != KeyKind.SIGSTORE:
        raise ValidationError(f"Unknown kind of key {kind!r}: gpg or sigstore.")
    pair = keys.generate()
    return _key_store(team=team, user=user, name=name, pair=pair, kind=kind, fingerprint=pair.fingerprint,
                      imported=False, request=request)


def signing_key_import(*, team: Team, user: User, name: str, private_pem: str, passphrase: str,
                       request=None) -> SigningKey:
    """An existing cosign private key (team admins). A corrupt key or a wrong passphrase is refused with the reason,
    and nothing is stored."""
    check_team_action(user, team, Action.ADMIN)
    try:
        pair = keys.load(private_pem, passphrase)
    except keys.UnusableKey as exc:
        raise ValidationError(str(exc)) from None
    return _key_store(team=team, user=user, name=name, pair=pair, kind=KeyKind.SIGSTORE, fingerprint=pair.fingerprint,
                      imported=True, request=request)


def _key_store(*, team, user, name, pair, kind, fingerprint, imported, request):
    name = (name or "").strip()
    validate_key_name(name)
    if SigningKey.objects.filter(team=team, name=name).exists():
        raise ValidationError(f"{team} has a key called {name} already; pick another name.")
    if SigningKey.objects.filter(team=team, fingerprint=fingerprint).exists():
        raise ValidationError(f"{team} has this key already.")
    try:
        with transaction.atomic():
            key = SigningKey.objects.create(team=team, name=name, kind=kind, public_key=pair.public_pem,
                                            private_key=pair.private_pem, passphrase=pair.passphrase,
                                            fingerprint=fingerprint, created_by=user, imported=imported)
            audit(action="signing_key.import" if imported else "signing_key.generate",
                  summary=f"{'imported' if imported else 'generated'} {kind} signing key {name} ({fingerprint[:16]})",
                  actor=user, team=team, obj=key, request=request, detail={"fingerprint": fingerprint, "kind": kind})
    except IntegrityError:
        raise ValidationError(f"{team} has a key called {name}, or this key, already.") from None
    return key


def signing_key_retire(*, key: SigningKey, user: User, request=None) -> SigningKey:
    """The key signs nothing more. A stage that requires it must be given another key first."""
    check_team_action(user, key.team, Action.ADMIN)
    with transaction.atomic():
        locked = SigningKey.objects.select_for_update().get(pk=key.pk)
        if locked.retired_at is not None:
            raise ValidationError(f"{locked} is retired already.")
        stages = sorted({policy.stage.name for policy in [*locked.stage_policies.select_related("stage"),
                                                          *locked.stage_entry_policies.select_related("stage")]})
        if stages:
            raise ValidationError(f"{', '.join(stages)} require{'s' if len(stages) == 1 else ''} {locked}: give "
                                  f"{'it' if len(stages) == 1 else 'them'} another key first.")
        locked.retired_at = timezone.now()
        locked.save(update_fields=["retired_at"])
        audit(action="signing_key.retire", summary=f"retired signing key {locked}", actor=user, team=locked.team,
              obj=locked, request=request, detail={"fingerprint": locked.fingerprint})
    return locked


def signing_key_sign_new_builds(*, key: SigningKey, user: User, on: bool, request=None) -> SigningKey:
    """Whether `key` signs every build of its team that succeeds from now on (team admins)."""
    check_team_action(user, key.team, Action.ADMIN)
    if on and not key.is_active:
        raise ValidationError(f"{key} is retired: it signs nothing more.")
    with transaction.atomic():
        SigningKey.objects.filter(pk=key.pk).update(signs_new_builds=on)
        audit(action="signing_key.sign_new_builds", summary=f"{'every new build is' if on else 'new builds are no longer'}"
              f" signed with {key}", actor=user, team=key.team, obj=key, request=request, detail={"on": on})
    key.signs_new_builds = on
    return key


# --- Signatures ------------------------------------------------------------------------------------------------------


def signature_request(*, build: Build, key: SigningKey, user: User | None, request=None,
                      trigger: str = "button") -> Signature:
    """Sign `build`'s digest with `key`: a Signature row and its run, queued after commit (developers; the system when
    `user` is None)."""
    team = build.definition.team
    if user is not None:
        check_team_action(user, team, Action.DEVELOP)
    if key.team_id != team.pk:
        raise ValidationError(f"{key} is a key of another team.")
    if not key.is_active:
        raise ValidationError(f"{key} is retired: it signs nothing more.")
    if not build.succeeded:
        raise ValidationError(f"{build} has no pushed digest to sign.")
    existing = Signature.objects.filter(key=key, digest=build.digest)
    if existing.valid().exists():
        raise ValidationError(f"{build.short_digest} is signed with {key} already.")
    if existing.pending().exists():
        raise ValidationError(f"{build.short_digest} is being signed with {key}.")
    with transaction.atomic():
        run = run_create(kind=RunKind.SIGNING, title=f"Sign {build} ({build.short_digest}) with {key}", team=team,
                         started_by=user, trigger=trigger)
        signature = Signature.objects.create(build=build, key=key, digest=build.digest, run=run, requested_by=user,
                                             requested_by_name=user.username if user is not None else "portal")
        audit(action="signature.request", summary=f"asked to sign {build} ({build.short_digest}) with {key}",
              actor=user, actor_name=None if user is not None else "portal", team=team, obj=signature,
              request=request, detail={"digest": build.digest, "key": key.fingerprint, "run": run.pk})
        transaction.on_commit(lambda: run_enqueue(tasks.signature_run, run.pk, run=run, what="the signing"))
    return signature


def build_succeeded(*, build_id: int) -> list[Signature]:
    """Builds announce each success (`builds.pipeline.BUILD_SUCCEEDED`): sign it with every active key of its team that
    signs new builds. A key that cannot sign it is logged and the others still sign."""
    build = Build.objects.with_related().filter(pk=build_id).first()
    if build is None or not build.succeeded:
        return []
    signatures = []
    for key in SigningKey.objects.filter(team=build.definition.team, signs_new_builds=True, retired_at__isnull=True):
        try:
            signatures.append(signature_request(build=build, key=key, user=None, trigger="system"))
        except ValidationError as exc:
            log.info("build %s is not signed with %s: %s", build.pk, key, " ".join(exc.messages))
    return signatures


# --- SBOMs ----------------------------------------------------------------------------------------------------------


def sbom_store(*, build: Build) -> BuildSbom:
    """The build's SBOM in object storage (SBOM_STORAGE), written now if it is not there yet. The object is written
    first and the row after it, so a write that fails half-way leaves no row pointing at a missing object (and the
    object of a row that could not be made is deleted). Raises objectstore.StorageUnavailable naming the setting."""
    existing = BuildSbom.objects.filter(build=build).first()
    if existing is not None:
        return existing
    data = sbom.sbom_json(build).encode()
    team = build.definition.team_id
    name = f"sboms/{team}/{build.definition.name}/build-{build.pk}.cdx.json"
    storage = BuildSbom._meta.get_field("file").storage
    with objectstore.named_errors("store the SBOM"):
        saved = storage.save(name, ContentFile(data))
    try:
        with transaction.atomic():
            stored, created = BuildSbom.objects.get_or_create(
                build=build, defaults={"file": saved, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    except Exception:
        storage.delete(saved)
        raise
    if not created:  # another worker stored it meanwhile: keep theirs
        storage.delete(saved)
    return stored


def sbom_build_succeeded(*, build_id: int) -> BuildSbom | None:
    """Builds announce each success (`builds.pipeline.BUILD_SUCCEEDED`): its SBOM goes to object storage at once, so
    it is there (and in the next backup's list) as long as the image is."""
    build = Build.objects.with_related().filter(pk=build_id).first()
    if build is None or not build.succeeded or build.image_deleted_at is not None:
        return None
    return sbom_store(build=build)


def sboms_store_missing(*, log) -> tuple[int, int]:
    """Store the SBOM of every succeeded build whose image is still there and that has none stored (it succeeded before
    SBOMs were stored, or object storage refused when it succeeded): `manage.py sbom_store_missing`, an operator's
    explicit step, since a download never writes one. Returns (stored, failed); a build that cannot be stored is
    logged and left for the next pass."""
    missing = Build.objects.in_registry().with_related().filter(sbom__isnull=True).order_by("pk")
    stored = failed = 0
    for build in missing.iterator(chunk_size=200):
        try:
            sbom_store(build=build)
        except objectstore.StorageUnavailable as exc:
            log(f"Could not store the SBOM of {build.definition} build {build.number}: {exc}")
            failed += 1
            continue
        stored += 1
    return stored, failed


def sboms_image_deleted(*, digest: str, team: Team, log, **_details) -> int:
    """Retention deleted an image (builds.cleanup announces it once the image is gone and the builds say so): the
    SBOMs of the team's builds of that digest go with it, never before it (only builds whose image is marked deleted).
    An object storage that refuses is logged and the row kept, so a later pass or a person can finish."""
    removed = 0
    for stored in BuildSbom.objects.filter(build__digest=digest, build__definition__team=team,
                                           build__image_deleted_at__isnull=False).select_related("build"):
        try:
            with objectstore.named_errors("delete the SBOM"):
                stored.file.storage.delete(stored.file.name)
        except objectstore.StorageUnavailable as exc:
            log(f"Could not delete the SBOM of build {stored.build.number} ({stored.file.name}): {exc}")
            continue
        stored.delete()
        removed += 1
    if removed:
        log(f"Removed with {short_digest(digest)}: {removed} SBOM(s) from object storage.")
    return removed


# --- What stages require ---------------------------------------------------------------------------------------------


def stage_signing_policy_set(*, stage: Stage, key: SigningKey | None, user: User, request=None,
                             entry: bool = False) -> Stage:
    """Require a signature with `key` for promotions to `stage` (None: no signature required); with `entry`, make
    `key` the stage's own key instead, which signs every digest as it is promoted in (None: the stage signs nothing).
    Team admins."""
    check_team_action(user, stage.team, Action.ADMIN)
    field = "entry_key" if entry else "key"
    if key is not None and key.team_id != stage.team_id:
        raise ValidationError(f"{key} is a key of another team.")
    if key is not None and not key.is_active:
        raise ValidationError(f"{key} is retired; a stage can name only an active key.")
    if key is not None and KeyRotation.objects.open().filter(old_key=key).exists():
        raise ValidationError(f"{key} is being rotated away; name the key it is rotated to.")
    with transaction.atomic():
        policy = StageSigningPolicy.objects.select_for_update(of=("self",)).filter(stage=stage).select_related(
            "key", "entry_key").first()
        before = getattr(policy, field, None) if policy else None
        if policy is None:
            policy = StageSigningPolicy(stage=stage)
        setattr(policy, field, key)
        policy.set_by, policy.set_at = user, timezone.now()
        if policy.key_id is None and policy.entry_key_id is None:
            if policy.pk:
                policy.delete()
        else:
            policy.save()
        if entry:
            summary = (f"{stage.name} signs every digest promoted into it with {key}" if key is not None
                       else f"{stage.name} signs nothing as digests enter it")
        else:
            summary = (f"{stage.name} requires a signature with {key}" if key is not None
                       else f"{stage.name} requires no signature")
        audit(action="stage.signing_policy", summary=summary, actor=user, team=stage.team, obj=stage, request=request,
              detail={"field": field, "before": before.fingerprint if before else None,
                      "after": key.fingerprint if key is not None else None})
    return stage


def _policy_of(stage_id) -> StageSigningPolicy | None:
    return StageSigningPolicy.objects.filter(stage_id=stage_id).select_related("key", "entry_key", "stage").first()


def _requirement_for(key: SigningKey) -> tuple[str, str]:
    """(kind, public key text) for policy.json: for a GPG key, a key ring of it and of the old key of a rotation to it
    that still overlaps (`rotation.verifying_keys`)."""
    if key.kind == KeyKind.GPG:
        return key.kind, rotation.key_ring_text(rotation.verifying_keys(key))
    return key.kind, key.public_key


def _key_words(key: SigningKey) -> str:
    """"key release (1A2B...)", and the old key that still verifies with it during a rotation."""
    older = rotation.verifying_keys(key)[1:]
    return f"key {key} ({key.short_fingerprint})" + "".join(
        f" or, until its rotation date, {old} ({old.short_fingerprint})" for old in older)


def stage_vulnerability_policy_set(*, stage: Stage, refuse_from: str | None, user: User, request=None) -> Stage:
    """Refuse promotions to `stage` of digests with known vulnerabilities of `refuse_from` severity or worse (critical,
    high, medium, low), unless an approver overrides it; None: no such policy. Team admins."""
    check_team_action(user, stage.team, Action.ADMIN)
    if refuse_from is not None and refuse_from not in SEVERITY_ORDER[:4]:
        raise ValidationError(f"Unknown severity {refuse_from!r}: critical, high, medium or low.")
    with transaction.atomic():
        before = StageVulnerabilityPolicy.objects.select_for_update().filter(stage=stage).first()
        if refuse_from is None:
            StageVulnerabilityPolicy.objects.filter(stage=stage).delete()
            summary = f"{stage.name} refuses no image for its vulnerabilities"
        else:
            StageVulnerabilityPolicy.objects.update_or_create(stage=stage, defaults={
                "refuse_from": refuse_from, "set_by": user, "set_at": timezone.now()})
            summary = f"{stage.name} refuses images with {refuse_from} or worse vulnerabilities"
        audit(action="stage.vulnerability_policy", summary=summary, actor=user, team=stage.team, obj=stage,
              request=request, detail={"before": before.refuse_from if before else None, "after": refuse_from})
    return stage


def vulnerability_override(*, promotion, user: User, reason: str, request=None) -> VulnerabilityOverride:
    """Let `promotion`'s digest into its stage despite the vulnerabilities the stage's policy refuses (someone who may
    approve the promotion, with a reason). Bound to the digest and to the advisories found now; audited, and shown on
    the approval card."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why this image may go in despite its vulnerabilities: it is recorded and shown.")
    with transaction.atomic():
        locked = Promotion.objects.select_for_update(of=("self",)).select_related(
            "target_stage", "target_stage__team", "build", "definition").get(pk=promotion.pk)
        refusal = approval_refusal(locked, user)
        if refusal:
            raise PermissionDenied(refusal)
        if locked.status not in (PromotionStatus.PENDING, PromotionStatus.APPROVED):
            raise ValidationError(f"Request #{locked.pk} is {locked.get_status_display().lower()}: there is nothing to "
                                  "override.")
        findings = gate.refused_findings(locked)
        if not findings:
            raise ValidationError(f"{locked.target_stage.name} refuses none of {locked.short_digest}'s known "
                                  "vulnerabilities: there is nothing to override.")
        names = sorted({f.advisory.identifier for f in findings})
        override = VulnerabilityOverride.objects.create(promotion=locked, digest=locked.digest, advisories=names,
                                                        reason=reason, approver=user, approver_name=user.username)
        audit(action="promotion.vulnerability_override",
              summary=f"overrode {', '.join(names)} for #{locked.pk} ({locked.definition} {locked.short_digest} to "
                      f"{locked.target_stage.name}): {reason}",
              actor=user, team=locked.target_stage.team, obj=locked, request=request,
              detail={"digest": locked.digest, "advisories": names, "reason": reason, "override": override.pk})
    return override


def copy_trust(*, promotion) -> CopyTrust | None:
    """Releases asks this before copying `promotion`'s digest to its stage. When the stage requires a signature: the
    policy.json (signedBy or sigstoreSigned with the stage's key, for the source repository) and the registries.d
    entry under which skopeo copies, so containers/image refuses an unsigned or wrongly signed digest. When the stage
    has a key of its own: that key signs the digest during the copy (`entry_signing`)."""
    policy = _policy_of(promotion.target_stage_id)
    if policy is None:
        return None
    repository = promotion.build.repository or promotion.definition.repository
    registry = repository.split("/", 1)[0]
    stage_name = promotion.target_stage.name
    required = policy.key
    words = [f"{stage_name} requires a signature with {_key_words(required)}"] if required else []
    entry = policy.entry_key if policy.entry_key_id and policy.entry_key.is_active else None
    if entry is not None:
        words.append(f"{stage_name} signs what enters it with key {entry} ({entry.short_fingerprint})")
    if not words:
        return None
    return CopyTrust(
        policy_json=trust.policy_json({repository: _requirement_for(required)} if required else {}),
        registries_d={"portal-signatures.yaml": trust.registries_d_yaml(
            [registry], lookaside=trust.lookaside_url(settings.SUPPLY_CHAIN_LOOKASIDE_DIR))},
        requirement="; ".join(words),
        signing=entry_signing(entry) if entry is not None else None,
    )


def entry_signing(key: SigningKey) -> CopySigning:
    """The stage key signing the digest during the promotion's copy: the key in the run's private directory for the
    copy; after it, the signature is looked for where it was stored and recorded as a Signature of the promotion's
    run, in the transaction that records the promotion (no signature found: the promotion fails, the tag goes back)."""

    @contextmanager
    def prepare(runner, workdir):
        with signing.key_in_hand(key, runner, workdir) as hand:
            yield hand.copy_args(), hand.env or None

    def recorded(*, promotion, run) -> str:
        repository = promotion.build.repository or promotion.definition.repository
        if key.kind == KeyKind.GPG:
            where = Path(trust.lookaside_path(settings.SUPPLY_CHAIN_LOOKASIDE_DIR, repository, promotion.digest))
            if not any(where.glob("signature-*")):
                raise ApplyFailed(f"skopeo copied {promotion.short_digest} to {promotion.target_stage.name} but its "
                                  f"signature with {key} is not in the lookaside store ({where}): check "
                                  "SUPPLY_CHAIN_LOOKASIDE_DIR is writable and shared by the workers.")
        signature = Signature.objects.create(build=promotion.build, key=key, digest=promotion.digest, run=run,
                                             requested_by=promotion.requested_by,
                                             requested_by_name=promotion.requested_by_name, signed_at=timezone.now())
        audit(action="signature.created", summary=f"signed {promotion.build} ({promotion.short_digest}) with {key} "
              f"as it entered {promotion.target_stage.name}", actor_name="portal", team=key.team, obj=signature,
              detail={"digest": promotion.digest, "key": key.fingerprint, "run": run.pk, "promotion": promotion.pk})
        return f"Signed with {key} as it entered {promotion.target_stage.name}"

    return CopySigning(description=f"The stage signs what enters it with key {key} ({key.short_fingerprint})",
                       prepare=prepare, recorded=recorded)


def stage_signature_requirement(*, stage: Stage) -> str:
    """What releases asks (through `portal.registry`, "stage.signature_requirement"): the key hosts of the stage
    verify, in words, or ""."""
    policy = _policy_of(stage.pk)
    if policy is None or policy.host_key is None:
        return ""
    if policy.entry_key_id:
        return f"{stage.name} signs what enters it with {_key_words(policy.entry_key)}"
    return f"{stage.name} requires a signature with {_key_words(policy.key)}"


def host_trust_files(*, stage: Stage) -> dict[str, str]:
    """What a host tracking `stage` needs to verify what it pulls (bake them into the image, the bootc way):
    /etc/containers/policy.json requiring the stage's key (its own key when it signs what enters it, else the key it
    requires; during a GPG rotation, the old key too until its date) for every repository of the team, and the
    registries.d entry that reads the signatures. Empty when the stage names no key."""
    policy = _policy_of(stage.pk)
    if policy is None or policy.host_key is None:
        return {}
    repositories = sorted(set(stage.team.image_definitions.values_list("repository", flat=True)))
    registries = sorted({repository.split("/", 1)[0] for repository in repositories})
    key = policy.host_key
    lookaside = f"{settings.SITE_URL.rstrip('/')}/lookaside" if key.kind == KeyKind.GPG else None
    requirement = _requirement_for(key)
    return {
        "policy.json": trust.host_policy_json({repository: requirement for repository in repositories}),
        "portal-signatures.yaml": trust.registries_d_yaml(registries, lookaside=lookaside, staging=False),
    }


HOST_TRUST_SNIPPET = """# Verify what this host pulls: {stage} takes only images signed with key {key} (docs/supply-chain.md).
# Put the two files next to the Containerfile. The policy's default is reject (each transport still accepts other
# images under its "" scope), as bootc switch --enforce-container-sigpolicy demands.
COPY policy.json /etc/containers/policy.json
COPY portal-signatures.yaml /etc/containers/registries.d/portal-signatures.yaml
"""


def signature_summary(*, stage: Stage, digest: str) -> dict:
    """What the approval card says: the key the stage requires (if any), the stage's own key that will sign it as it
    enters, and the valid signatures of `digest`."""
    policy = _policy_of(stage.pk)
    signatures = list(Signature.objects.valid().filter(digest=digest, key__team=stage.team)
                      .select_related("key", "requested_by").order_by("signed_at"))
    required = policy.key if policy else None
    accepted = {key.pk for key in rotation.verifying_keys(required)} if required else set()
    return {"required": required, "signatures": signatures, "entry_key": policy.entry_key if policy else None,
            "satisfied": required is None or any(s.key_id in accepted for s in signatures),
            "short_digest": short_digest(digest)}


# --- Advisory feeds --------------------------------------------------------------------------------------------------


def feed_read_limit() -> int:
    """How many bytes of a feed the portal reads; more is refused with the setting's name."""
    return settings.SUPPLY_CHAIN_FEED_MAX_BYTES


def feed_import(*, name: str, data: bytes, source: str, user: User | None, request=None) -> AdvisoryFeed:
    """Replace the advisories of feed `name` with those in `data` (OSV JSON or CSAF: one record, a list, or a zip of
    them), in one transaction: a feed that does not parse changes nothing. Portal administrators only (feeds serve every
    team)."""
    if user is not None and not user.is_superuser:
        raise ValidationError("Only portal administrators import advisory feeds.")
    name = (name or "").strip()[:100]
    if not name:
        raise ValidationError("Name the feed (e.g. debian-bookworm).")
    records = vulns.parse_osv(data)  # raises ValidationError with the reason
    with transaction.atomic():
        feed, _ = AdvisoryFeed.objects.select_for_update().get_or_create(name=name)
        before = notifications.findings()
        feed.advisories.all().delete()
        count = vulns.store(feed, records)
        feed.source, feed.imported_at, feed.imported_by, feed.advisory_count = source[:500], timezone.now(), user, count
        feed.content_sha256, feed.last_error = hashlib.sha256(data).hexdigest(), ""
        feed.save()
        audit(action="advisories.import", summary=f"imported {count} advisories into feed {name} from {source}",
              actor=user, actor_name=None if user is not None else "portal", obj=feed, request=request,
              detail={"count": count, "source": source})
        # What the stages hold or the hosts boot and the feed newly finds affected, told to each team
        # (vulnerabilities.found, vulnerabilities.running).
        notifications.notify_new_findings(before=before, after=notifications.findings(), feed=feed, actor=user)
    return feed


# --- Images deleted by retention -------------------------------------------------------------------------------------

# cosign's tags beside an image, named after its digest: signatures, attestations and SBOMs.
ATTACHMENT_SUFFIXES = ("sig", "att", "sbom")


def image_deleted(*, repository: str, digest: str, access, team: Team, log, **_details) -> list[str]:
    """Retention deleted repository@digest (builds.cleanup announces it once the image is gone and on record): the
    digest's signatures go with it, never before it. GPG signatures leave the lookaside store, and cosign's attachment
    tags (signatures, attestations, SBOMs) are deleted from the registry. Returns what went, as the log says it."""
    removed = []
    store = Path(trust.lookaside_path(settings.SUPPLY_CHAIN_LOOKASIDE_DIR, repository, digest))
    if store.is_dir():
        count = sum(1 for _ in store.glob("signature-*"))
        shutil.rmtree(store)
        removed.append(f"{count} GPG signature(s) from the lookaside store")
    algorithm, _, hex_digest = digest.partition(":")
    for suffix in ATTACHMENT_SUFFIXES:
        tag = f"{algorithm}-{hex_digest}.{suffix}"
        try:
            # Deleted by its own digest, never by tag (a tag may have moved): the portal deletes by digest only.
            attachment = registry.manifest_digest(registry.raw_manifest(f"{repository}:{tag}", access=access))
            if Build.objects.filter(digest=attachment).exists():
                log(f"Kept {repository}:{tag}: it points at a build's image, not at an attachment.")
                continue
            registry.delete_manifest(repository, attachment, access=access)
        except registry.ManifestUnknown:
            continue
        except registry.RegistryError as exc:
            log(f"Could not delete the attachment {repository}:{tag}: {exc}. Delete it by hand; it vouches for an "
                "image that is gone.")
            continue
        removed.append(f"the attachment {tag}")
    if removed:
        log(f"Removed with {short_digest(digest)}: {'; '.join(removed)}.")
        audit(action="signatures.delete", actor_name="portal", team=team,
              summary=f"removed the signatures of {repository}@{short_digest(digest)} with the image",
              detail={"repository": repository, "digest": digest, "removed": removed})
    return removed
