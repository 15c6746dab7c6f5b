"""Every state change of disk images, their artifacts and retention, and the kickstarts written, once each. A team's
saved configurations and AWS credentials change in `services_presets`, boot tests in `services_boottests`.

Views, tasks and management commands call these keyword-only functions; each checks access, validates, writes inside a
transaction, audits in the same transaction and enqueues after commit. What a worker does with a conversion is in
`builds.diskimages.pipeline`; the command lines are in `converters`, configurations in `diskconfig` (checked by
`diskchecks`) and kickstarts in `kickstart`.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from builds import queues
from builds.models import Build, ImageDefinition
from builds.releases.models import Stage, StageHistory
from builds.services import builder_pick
from portal import egress, objectstore
from portal.access import can, check_team_action
from portal.formatting import short_digest
from portal.models import Action, Run, RunKind, RunStatus, Team, User
from portal.services import audit, run_create, run_enqueue, run_finish

from . import converters, diskchecks, diskconfig, tasks
from .kickstart import KickstartProblem, KickstartSpec, generate
from .models import (
    Artifact,
    ArtifactRetention,
    CloudCredential,
    DiskImage,
    DiskImageBackend,
    DiskImagePreset,
    RootFilesystem,
)

log = logging.getLogger(__name__)

AWS_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
AWS_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
AMI_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./'@_-]{3,128}$")


def check_role(user, team, action):
    """Access check for people; user=None is the portal itself (retention, retries by the system)."""
    if user is not None:
        check_team_action(user, team, action)


def builder_choices() -> list[tuple[str, str]]:
    """The (tool, builder image) pairs people may choose, the default tool's first (settings DISK_IMAGE_BACKEND).
    Nothing else is ever run: a builder container is privileged."""
    image_builder = [(DiskImageBackend.IMAGE_BUILDER.value, settings.DISK_IMAGE_IMAGE_BUILDER_IMAGE)] \
        if settings.DISK_IMAGE_IMAGE_BUILDER_IMAGE else []
    bib = [(DiskImageBackend.BIB.value, image) for image in settings.DISK_IMAGE_BUILDER_IMAGES]
    return image_builder + bib if settings.DISK_IMAGE_BACKEND == DiskImageBackend.IMAGE_BUILDER else bib + image_builder


def builder_tool(*, backend: str, builder_image: str) -> tuple[str, str]:
    """The tool and image a request runs: both as given, the tool of a given image, or the default tool's first image.
    Raises ValidationError (on builder_image) for a pair the settings do not offer."""
    choices = builder_choices()
    if not backend and builder_image:
        backend = next((tool for tool, image in choices if image == builder_image), "")
    backend = backend or (choices[0][0] if choices else settings.DISK_IMAGE_BACKEND)
    builder_image = builder_image or next((image for tool, image in choices if tool == backend), "")
    if (backend, builder_image) not in choices:
        tool = dict(DiskImageBackend.choices).get(backend, backend)
        offered = "; ".join(f"{image} ({dict(DiskImageBackend.choices)[t]})" for t, image in choices) or "none"
        raise ValidationError({"builder_image": f"{builder_image or 'No builder image'} with {tool} is not offered by "
                                                f"this portal (it runs: {offered})."})
    return backend, builder_image


def tool_type_problems(backend: str, types) -> list[str]:
    """What the chosen tool refuses among `types`, said before the run instead of found in its log."""
    problems = []
    if backend == DiskImageBackend.IMAGE_BUILDER and "anaconda-iso" in types:
        # image-builder's own words: image type bootc "anaconda-iso" is not supported with image-builder, please
        # consider switching to "bootc-installer" or use bootc-image-builder
        problems.append("osbuild image-builder does not make anaconda-iso from a bootc image: pick bootc-installer "
                        "(an installer ISO whose installer is the image itself, so the image must contain Anaconda), "
                        "or bootc-image-builder as the tool.")
    return problems


# --- The source: a build, or the digest a stage holds ----------------------------------------------------------------


def stage_current(*, stage: Stage, definition: ImageDefinition) -> StageHistory | None:
    """What `stage` holds for `definition` now, from the promotions' stage history (None when nothing was promoted)."""
    return StageHistory.objects.current(stage, definition)


def _source(*, build: Build | None, stage: Stage | None, definition: ImageDefinition | None):
    """(definition, build or None, digest, repository) of the request's source."""
    if build is not None:
        if stage is not None:
            raise ValidationError("Pick a build or a stage, not both.")
        if not build.succeeded:
            raise ValidationError({"build": f"{build} has no pushed image ({build.get_status_display().lower()}); "
                                            "only a succeeded build can be converted."})
        return build.definition, build, build.digest, build.repository or build.definition.repository
    if stage is None or definition is None:
        raise ValidationError("Pick a succeeded build, or an image and a stage.")
    if stage.team_id != definition.team_id:
        raise ValidationError({"stage": f"{stage.name} is a stage of another team."})
    entry = stage_current(stage=stage, definition=definition)
    if entry is None:
        raise ValidationError({"stage": f"{stage.name} holds no image of {definition.name} yet: promote a build to it "
                                        "first, or convert a build directly."})
    source_build = entry.build or Build.objects.filter(definition=definition, digest=entry.digest).order_by(
        "-number").first()
    return definition, source_build, entry.digest, definition.repository


def _member_for(manifest_list: Build, architecture: str) -> tuple[Build, str]:
    """A disk image is of one architecture: of a manifest list, the member image of `architecture` (default: the
    list's first platform)."""
    members = sorted(manifest_list.members.succeeded(), key=lambda m: manifest_list.platforms.index(m.platform)
                     if m.platform in manifest_list.platforms else len(manifest_list.platforms))
    member = next((m for m in members if not architecture or m.architecture == architecture), None)
    if member is None:
        held = ", ".join(m.architecture for m in members) or "no image"
        raise ValidationError({"architecture": f"Manifest list build {manifest_list.number} has no {architecture} "
                                               f"image; it holds {held}."})
    return member, member.digest


# --- Requests --------------------------------------------------------------------------------------------------------


def disk_image_request(
    *,
    user: User | None,
    types: list[str],
    build: Build | None = None,
    stage: Stage | None = None,
    definition: ImageDefinition | None = None,
    architecture: str = "",
    rootfs: str = RootFilesystem.XFS,
    preset: DiskImagePreset | None = None,
    config: dict | None = None,
    backend: str = "",
    builder_image: str = "",
    aws_bucket: str = "",
    aws_region: str = "",
    aws_ami_name: str = "",
    aws_credential: CloudCredential | None = None,
    trigger: str = "button",
    retry_of: DiskImage | None = None,
    request=None,
) -> DiskImage:
    """Queue a conversion of a succeeded build's digest (or the digest `stage` holds for `definition`) into `types`.

    Raises ValidationError naming the field for anything the builder would refuse: an unknown or unsupported type, an
    architecture the image is not built for, a configuration key the types do not accept, half-given AMI settings.
    """
    definition, source_build, digest, repository = _source(build=build, stage=stage, definition=definition)
    if source_build is not None and source_build.is_manifest_list:
        source_build, digest = _member_for(source_build, architecture)
    team = definition.team
    check_role(user, team, Action.DEVELOP)
    errors: dict[str, list[str]] = {}

    types = list(dict.fromkeys(types or []))
    unknown = [t for t in types if t not in diskconfig.ALL_TYPES]
    if not types:
        errors.setdefault("types", []).append("Pick at least one image type.")
    elif unknown:
        errors.setdefault("types", []).append(f"Unknown image type(s): {', '.join(unknown)}.")

    image_arch = (source_build.architecture if source_build is not None else "") or ""
    architecture = architecture or image_arch or "amd64"
    if architecture not in converters.OSBUILD_ARCH:
        errors.setdefault("architecture", []).append(
            f"{architecture!r} is not an architecture the builder supports ({', '.join(converters.OSBUILD_ARCH)}).")
    elif image_arch and architecture != image_arch:
        errors.setdefault("architecture", []).append(
            f"Architecture mismatch: the image is built for {image_arch}, so its disk images are {image_arch} too. "
            f"Build the definition for linux/{architecture} and convert that build.")
    if any(t in diskconfig.ISO_TYPES for t in types) and architecture not in converters.ISO_ARCHITECTURES:
        errors.setdefault("types", []).append(
            f"The installer ISO exists only for {' and '.join(converters.ISO_ARCHITECTURES)}, not {architecture}.")
    if rootfs not in RootFilesystem.values:
        errors.setdefault("rootfs", []).append(f"{rootfs!r} is not one of {', '.join(RootFilesystem.values)}.")

    if preset is not None and preset.team_id != team.pk:
        errors.setdefault("preset", []).append("That configuration belongs to another team.")
    if config is None:
        config = dict(preset.config) if preset is not None else {}
    report = diskchecks.check_for_types(config, [t for t in types if t in diskconfig.ALL_TYPES], rootfs=rootfs)
    if report.errors:
        errors.setdefault("config", []).extend(report.error_texts())

    try:
        backend, builder_image = builder_tool(backend=backend, builder_image=builder_image)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    else:
        for problem in tool_type_problems(backend, types):
            errors.setdefault("types", []).append(problem)

    aws_given = [v for v in (aws_bucket, aws_region, aws_ami_name) if v]
    if aws_given or aws_credential is not None:
        if "ami" not in types:
            errors.setdefault("aws_bucket", []).append("The AWS upload settings only apply to the ami type.")
        elif len(aws_given) != 3:
            errors.setdefault("aws_bucket", []).append("Give the bucket, the region and the AMI name (all three), or "
                                                       "none to keep the AMI's disk.raw in the portal only.")
        if aws_bucket and not AWS_BUCKET_RE.match(aws_bucket):
            errors.setdefault("aws_bucket", []).append(f"{aws_bucket!r} is not an S3 bucket name (3-63 lower-case "
                                                       "letters, digits, dots and dashes).")
        if aws_region and not AWS_REGION_RE.match(aws_region):
            errors.setdefault("aws_region", []).append(f"{aws_region!r} is not an AWS region (e.g. eu-west-1).")
        elif aws_region:
            for endpoint in converters.aws_endpoints(aws_region):
                try:
                    egress.check(endpoint, 443, what=f"The AMI upload endpoint {endpoint}")
                except egress.EgressRefused as exc:
                    errors.setdefault("aws_region", []).append(str(exc))
        if aws_ami_name and not AMI_NAME_RE.match(aws_ami_name):
            errors.setdefault("aws_ami_name", []).append("An AMI name is 3-128 letters, digits, spaces and ( ) [ ] . / "
                                                         "' @ _ -.")
        if len(aws_given) == 3 and aws_credential is None:
            errors.setdefault("aws_credential", []).append("Pick the AWS credentials the builder uploads with (a team "
                                                           "admin adds them on the disk image settings page).")
        if aws_credential is not None and aws_credential.team_id != team.pk:
            errors.setdefault("aws_credential", []).append("Those credentials belong to another team.")
    if errors:
        raise ValidationError(errors)

    with transaction.atomic():
        builder = builder_pick(f"linux/{architecture}", queue_of=queues.conversion_queue)
        run = run_create(kind=RunKind.DISK_IMAGE, started_by=user, trigger=trigger, team=team,
                         title=f"Disk image ({', '.join(types)}) of {definition}"
                               f"{f' build {source_build.number}' if source_build else ''} @ {short_digest(digest)}")
        disk_image = DiskImage.objects.create(
            team=team, definition=definition, build=source_build, stage=stage, repository=repository, digest=digest,
            types=types, architecture=architecture, rootfs=rootfs, backend=backend, builder_image=builder_image,
            preset=preset, preset_name=preset.name if preset is not None else "", config=config,
            aws_bucket=aws_bucket, aws_region=aws_region, aws_ami_name=aws_ami_name, aws_credential=aws_credential,
            builder=builder, run=run, retry_of=retry_of,
        )
        content_type = ContentType.objects.get_for_model(DiskImage)
        Run.objects.filter(pk=run.pk).update(content_type=content_type, object_id=str(disk_image.pk))
        run.content_type, run.object_id = content_type, str(disk_image.pk)
        audit(action="disk_image.request", actor=user, team=team, obj=disk_image, request=request,
              summary=f"asked for {', '.join(types)} of {definition} @ {short_digest(digest)}"
                      f"{f' (stage {stage.name})' if stage else ''}",
              detail={"types": types, "digest": digest, "architecture": architecture, "rootfs": rootfs,
                      "preset": preset.name if preset else "", "backend": backend, "builder_image": builder_image,
                      "stage": stage.name if stage else "", "ami_upload": bool(aws_given),
                      "retry_of": retry_of.pk if retry_of else None, "warnings": report.warning_texts()})
        if builder is None:
            reason = (f"No enabled builder for {architecture}: add one of architecture {architecture} on the builders "
                      "page (conversions run natively on a builder of the image's architecture).")
            run_finish(run, status=RunStatus.FAILED, reason=reason)
            DiskImage.objects.filter(pk=disk_image.pk).update(failure_cause=converters.Cause.OTHER,
                                                              hint="Add or enable a builder of this architecture.")
        else:
            queue = queues.conversion_queue(builder)
            transaction.on_commit(lambda: run_enqueue(tasks.disk_image_run, disk_image.pk, run=run, what="the conversion",
                                                      queue=queue, unserved=queues.unserved(builder, queue, "conversion")))
    return disk_image


def disk_image_retry(*, disk_image: DiskImage, user: User | None, request=None) -> DiskImage:
    """A new conversion with the same source, types and configuration (the old one stays as it was)."""
    if disk_image.is_active:
        raise ValidationError(f"{disk_image} is still {disk_image.run.get_status_display().lower()}.")
    build = disk_image.build if disk_image.build is not None and disk_image.build.digest == disk_image.digest else None
    if build is None:
        build = Build.objects.filter(definition=disk_image.definition, digest=disk_image.digest).order_by(
            "-number").first()
    if build is None:
        raise ValidationError("The build this conversion came from is gone; start a new request.")
    return disk_image_request(
        user=user, types=disk_image.types, build=build, architecture=disk_image.architecture, rootfs=disk_image.rootfs,
        preset=disk_image.preset, config=disk_image.config, backend=disk_image.backend,
        builder_image=disk_image.builder_image,
        aws_bucket=disk_image.aws_bucket, aws_region=disk_image.aws_region, aws_ami_name=disk_image.aws_ami_name,
        aws_credential=disk_image.aws_credential, retry_of=disk_image, request=request,
    )


def disk_image_retry_run(*, run: Run, user: User | None, request=None) -> DiskImage:
    """`disk_image_retry` of the conversion this run is, for the core's retry view (registered in apps.py); the view
    has checked the user's role. Cancelling is the core's own (`portal.services.run_request_cancel`)."""
    disk_image = DiskImage.objects.select_related("run", "definition", "build").filter(run=run).first()
    if disk_image is None:
        raise ValidationError(f"{run} has no disk image to make again.")
    return disk_image_retry(disk_image=disk_image, user=user, request=request)


# --- Artifacts -------------------------------------------------------------------------------------------------------


def _delete_stored(storage, *names):
    """Delete stored files after the row says they are gone. One that cannot be deleted now (object storage down) is
    logged and left: the row no longer points at it, and `manage.py storage_check` shows the storage's state."""
    for name in names:
        if not name:
            continue
        try:
            storage.delete(name)
        except FileNotFoundError:
            pass
        except (OSError, *objectstore.storage_errors()) as exc:
            log.warning("could not delete %s from storage: %s", name, objectstore.explain(exc, doing="delete it"))


def artifact_delete(*, artifact: Artifact, user: User | None, reason: str = "", request=None) -> Artifact:
    """Delete an artifact's file; its row stays (type, size, checksum) so the history still says what was made."""
    check_role(user, artifact.disk_image.team, Action.DEVELOP)
    if artifact.deleted_at is not None:
        return artifact
    reason = reason or (f"deleted by {user.username}" if user is not None else "deleted")
    with transaction.atomic():
        changed = Artifact.objects.filter(pk=artifact.pk, deleted_at__isnull=True).update(
            deleted_at=timezone.now(), deleted_reason=reason[:200])
        if not changed:
            return artifact
        audit(action="artifact.delete", actor=user, team=artifact.disk_image.team, obj=artifact, request=request,
              summary=f"deleted {artifact.filename} ({artifact.size:,} bytes) of {artifact.disk_image}",
              detail={"sha256": artifact.sha256, "reason": reason})
        storage, names = artifact.file.storage, [artifact.file.name, artifact.checksum_name]
        transaction.on_commit(lambda: _delete_stored(storage, *names))
    artifact.deleted_at, artifact.deleted_reason = timezone.now(), reason
    return artifact


def disk_image_delete_files(*, disk_image: DiskImage, user: User | None, request=None) -> int:
    """Delete every file of a conversion (the rows stay). Returns how many were deleted."""
    check_role(user, disk_image.team, Action.DEVELOP)
    if disk_image.is_active:
        raise ValidationError("The conversion is still running: cancel it first.")
    count = 0
    for artifact in disk_image.artifacts.filter(deleted_at__isnull=True):
        artifact_delete(artifact=artifact, user=user, request=request)
        count += 1
    return count


def retention_for(team: Team) -> ArtifactRetention:
    """The team's policy, or the portal's default (not saved) when it has none."""
    policy = ArtifactRetention.objects.filter(team=team).first()
    if policy is None:
        policy = ArtifactRetention(team=team, keep_days=settings.DISK_IMAGE_RETENTION_DAYS,
                                   keep_latest=settings.DISK_IMAGE_RETENTION_KEEP_LATEST)
    return policy


def retention_save(*, team: Team, user: User | None, keep_days: int, keep_latest: int, request=None):
    check_role(user, team, Action.ADMIN)
    if keep_days < 0 or keep_latest < 0:
        raise ValidationError("Days and counts cannot be negative.")
    with transaction.atomic():
        policy, _ = ArtifactRetention.objects.select_for_update().get_or_create(team=team)
        before = (policy.keep_days, policy.keep_latest)
        policy.keep_days, policy.keep_latest = keep_days, keep_latest
        policy.updated_by = user if user is not None and user.is_authenticated else None
        policy.save()
        audit(action="artifact_retention.save", actor=user, team=team, obj=policy, request=request,
              summary=f"set {team}'s disk image retention: "
                      f"{f'{keep_days} days' if keep_days else 'keep forever'}, always the newest {keep_latest}",
              detail={"keep_days": keep_days, "keep_latest": keep_latest, "before": list(before)})
    return policy


def expired_artifacts(team: Team, *, now=None):
    """The team's stored artifacts its policy says to delete now."""
    policy = retention_for(team)
    if not policy.keep_days:
        return Artifact.objects.none()
    now = now or timezone.now()
    keep = set()
    if policy.keep_latest:
        for definition_id in DiskImage.objects.filter(team=team).values_list("definition_id", flat=True).distinct():
            keep.update(DiskImage.objects.filter(team=team, definition_id=definition_id,
                                                 run__status=RunStatus.SUCCEEDED)
                        .order_by("-created_at", "-id").values_list("pk", flat=True)[:policy.keep_latest])
    return (Artifact.objects.present().filter(disk_image__team=team, created_at__lt=now - timedelta(days=policy.keep_days))
            .exclude(disk_image_id__in=keep).select_related("disk_image", "disk_image__team"))


def artifacts_expire(*, now=None) -> int:
    """Beat: apply every team's retention policy. Returns how many files were deleted."""
    deleted = 0
    team_ids = Artifact.objects.present().values_list("disk_image__team_id", flat=True).distinct()
    for team in Team.objects.filter(pk__in=list(team_ids)):
        policy = retention_for(team)
        for artifact in expired_artifacts(team, now=now):
            artifact_delete(artifact=artifact, user=None,
                            reason=f"expired: older than {policy.keep_days} days (team retention policy)")
            deleted += 1
    return deleted


# --- Kickstarts ------------------------------------------------------------------------------------------------------


def can_kickstart(user, team) -> bool:
    """Developers (who convert images) and operators (who install hosts) may write kickstarts."""
    return can(user, team, Action.DEVELOP) or can(user, team, Action.OPERATE)


def kickstart_generate(*, user: User | None, definition: ImageDefinition, spec: KickstartSpec, stage: Stage | None = None,
                       digest: str = "", request=None) -> str:
    """A kickstart installing `definition` from `stage`'s tag or from `digest`; audited (keys and hashes are not)."""
    team = definition.team
    if user is not None:
        check_team_action(user, team, Action.VIEW)
        if not can_kickstart(user, team):
            raise PermissionDenied(f"Your role in {team} does not allow you to write kickstarts (developers and "
                                   "operators may).")
    try:
        text = generate(spec)
    except KickstartProblem as exc:
        raise ValidationError(str(exc)) from None
    audit(action="kickstart.generate", actor=user, team=team, obj=definition, request=request,
          summary=f"wrote a kickstart for {definition} from {stage.name if stage else short_digest(digest)}",
          detail={"url": spec.image_ref, "transport": spec.transport, "track": spec.track_ref,
                  "signature_verification": not spec.skip_signature_verification, "user": spec.username,
                  "layout": spec.layout})
    return text
