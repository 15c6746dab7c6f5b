"""Every state change of the supply chain, written once: signing keys, signature requests, what a stage requires, and
advisory feed imports. Views, tasks and management commands call these. What a worker does to sign is in `signing`.

`copy_trust` is what releases asks (through `portal.registry`, "promotion.copy_trust") before it copies a digest to a
stage: the policy.json that makes containers/image refuse a digest not signed with the stage's key.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from builds import registry
from builds.models import Build
from builds.releases.apply import CopyTrust
from builds.releases.models import Stage
from portal import objectstore
from portal.access import check_team_action
from portal.formatting import short_digest
from portal.models import Action, RunKind, Team, User
from portal.services import audit, run_create, run_enqueue

from . import gpg, keys, sbom, tasks, trust, vulns
from .models import AdvisoryFeed, BuildSbom, KeyKind, Signature, SigningKey, StageSigningPolicy, validate_key_name

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
        stages = [policy.stage.name for policy in locked.stage_policies.select_related("stage")]
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


def stage_signing_policy_set(*, stage: Stage, key: SigningKey | None, user: User, request=None) -> Stage:
    """Require a signature with `key` for promotions to `stage` (None: no signature required). Team admins."""
    check_team_action(user, stage.team, Action.ADMIN)
    if key is not None and key.team_id != stage.team_id:
        raise ValidationError(f"{key} is a key of another team.")
    if key is not None and not key.is_active:
        raise ValidationError(f"{key} is retired; a stage can require only an active key.")
    with transaction.atomic():
        before = StageSigningPolicy.objects.select_for_update().filter(stage=stage).select_related("key").first()
        if key is None:
            StageSigningPolicy.objects.filter(stage=stage).delete()
        else:
            StageSigningPolicy.objects.update_or_create(stage=stage, defaults={"key": key, "set_by": user,
                                                                               "set_at": timezone.now()})
        summary = (f"{stage.name} requires a signature with {key}" if key is not None
                   else f"{stage.name} requires no signature")
        audit(action="stage.signing_policy", summary=summary, actor=user, team=stage.team, obj=stage, request=request,
              detail={"before": before.key.fingerprint if before else None,
                      "after": key.fingerprint if key is not None else None})
    return stage


def copy_trust(*, promotion) -> CopyTrust | None:
    """Releases asks this before copying `promotion`'s digest to its stage: when the stage requires a signature, the
    policy.json (sigstoreSigned with the stage's key, for the source repository) and the registries.d entry (sigstore
    attachments) under which skopeo copies, so containers/image refuses an unsigned or wrongly signed digest."""
    policy = StageSigningPolicy.objects.filter(stage_id=promotion.target_stage_id).select_related("key").first()
    if policy is None:
        return None
    repository = promotion.build.repository or promotion.definition.repository
    registry = repository.split("/", 1)[0]
    key = policy.key
    return CopyTrust(
        policy_json=trust.policy_json({repository: (key.kind, key.public_key)}),
        registries_d={"portal-signatures.yaml": trust.registries_d_yaml(
            [registry], lookaside=trust.lookaside_url(settings.SUPPLY_CHAIN_LOOKASIDE_DIR))},
        requirement=f"{promotion.target_stage.name} requires a signature with key {key} ({key.short_fingerprint})",
    )



def stage_signature_requirement(*, stage: Stage) -> str:
    """What releases asks (through `portal.registry`, "stage.signature_requirement"): the key the stage requires, in
    words, or ""."""
    policy = StageSigningPolicy.objects.filter(stage=stage).select_related("key").first()
    if policy is None:
        return ""
    return f"{stage.name} requires a signature with key {policy.key} ({policy.key.short_fingerprint})"


def host_trust_files(*, stage: Stage) -> dict[str, str]:
    """What a host tracking `stage` needs to verify what it pulls (bake them into the image, the bootc way):
    /etc/containers/policy.json requiring the stage's key for every repository of the team, and the registries.d entry
    that reads sigstore attachments. Empty when the stage requires no signature."""
    policy = StageSigningPolicy.objects.filter(stage=stage).select_related("key").first()
    if policy is None:
        return {}
    repositories = sorted(set(stage.team.image_definitions.values_list("repository", flat=True)))
    registries = sorted({repository.split("/", 1)[0] for repository in repositories})
    key = policy.key
    lookaside = f"{settings.SITE_URL.rstrip('/')}/lookaside" if key.kind == KeyKind.GPG else None
    return {
        "policy.json": trust.host_policy_json({repository: (key.kind, key.public_key) for repository in repositories}),
        "portal-signatures.yaml": trust.registries_d_yaml(registries, lookaside=lookaside, staging=False),
    }


HOST_TRUST_SNIPPET = """# Verify what this host pulls: {stage} takes only images signed with key {key} (docs/supply-chain.md).
# Put the two files next to the Containerfile. The policy's default is reject (each transport still accepts other
# images under its "" scope), as bootc switch --enforce-container-sigpolicy demands.
COPY policy.json /etc/containers/policy.json
COPY portal-signatures.yaml /etc/containers/registries.d/portal-signatures.yaml
"""


def signature_summary(*, stage: Stage, digest: str) -> dict:
    """What the approval card says: the key the stage requires (if any) and the valid signatures of `digest`."""
    policy = StageSigningPolicy.objects.filter(stage=stage).select_related("key").first()
    signatures = list(Signature.objects.valid().filter(digest=digest, key__team=stage.team)
                      .select_related("key", "requested_by").order_by("signed_at"))
    required = policy.key if policy else None
    return {"required": required, "signatures": signatures,
            "satisfied": required is None or any(s.key_id == required.pk for s in signatures),
            "short_digest": short_digest(digest)}


# --- Advisory feeds --------------------------------------------------------------------------------------------------


def feed_read_limit() -> int:
    """How many bytes of a feed the portal reads; more is refused with the setting's name."""
    return settings.SUPPLY_CHAIN_FEED_MAX_BYTES


def feed_import(*, name: str, data: bytes, source: str, user: User | None, request=None) -> AdvisoryFeed:
    """Replace the advisories of feed `name` with those in `data` (OSV JSON: one record, a list, or a zip of records),
    in one transaction: a feed that does not parse changes nothing. Portal administrators only (feeds serve every
    team)."""
    if user is not None and not user.is_superuser:
        raise ValidationError("Only portal administrators import advisory feeds.")
    name = (name or "").strip()[:100]
    if not name:
        raise ValidationError("Name the feed (e.g. debian-bookworm).")
    records = vulns.parse_osv(data)  # raises ValidationError with the reason
    with transaction.atomic():
        feed, _ = AdvisoryFeed.objects.select_for_update().get_or_create(name=name)
        feed.advisories.all().delete()
        count = vulns.store(feed, records)
        feed.source, feed.imported_at, feed.imported_by, feed.advisory_count = source[:500], timezone.now(), user, count
        feed.save()
        audit(action="advisories.import", summary=f"imported {count} advisories into feed {name} from {source}",
              actor=user, actor_name=None if user is not None else "portal", obj=feed, request=request,
              detail={"count": count, "source": source})
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
