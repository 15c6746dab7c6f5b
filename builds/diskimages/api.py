"""The REST API of disk images: conversions of a build's digest (or what a stage holds) into qcow2, raw, ISO, vmdk or
AMI, their files, the team's saved configurations (bootc-image-builder's config), and kickstarts.

Every change goes through `builds.diskimages.services`, as on the pages; a conversion is a run whose log streams on
/ws/runs/<run>/ like a build's.
"""

from datetime import datetime
from typing import Any

from django.db.models import Q
from django.http import Http404
from ninja import Field, Router, Schema, Status

from builds.access import get_build_for_user, get_definition_by_reference_for_user
from builds.models import Build, ImageDefinition
from builds.releases.models import Stage
from portal.access import get_team_for_user
from portal.api import PAGE_LIMIT_DEFAULT, Body, Problem, page_of, paginate, token_auth
from portal.models import Action, RunStatus, Scope

from . import diskconfig, services, services_presets
from .access import get_disk_image_for_user, get_preset_for_user
from .forms import KickstartForm
from .kickstart import KickstartSpec
from .models import DiskImage, DiskImagePreset, DiskImageType, RootFilesystem

disk_images = Router(tags=["disk images"])  # /api/v1/disk-images/
configurations = Router(tags=["disk images"])  # /api/v1/configurations/
kickstarts = Router(tags=["disk images"])  # /api/v1/kickstarts/
# Registered by their dotted paths in the app's ready() (portal.registry.api_router).

# --- Schemas ---------------------------------------------------------------------------------------------------------


class ArtifactOut(Schema):
    type: str
    filename: str
    size: int
    sha256: str
    format: str
    ami_id: str
    download_url: str
    deleted: bool


class DiskImageOut(Schema):
    id: int
    team: str
    definition: str = Field(..., description="team/name")
    build: int | None
    stage: str | None
    digest: str
    types: list[str]
    architecture: str
    rootfs: str
    configuration: str | None = Field(None, description="The saved configuration it used, by name.")
    status: str = Field(..., description="The run's status: queued, running, succeeded, failed, cancelled.")
    phase: str
    reason: str | None
    hint: str
    created_at: datetime
    finished_at: datetime | None
    artifacts: list[ArtifactOut]
    run: int
    url: str


class DiskImageIn(Body):
    types: list[DiskImageType] = Field(..., min_length=1, description="qcow2, raw, iso, anaconda-iso, vmdk, ami, ...")
    build: int | None = Field(None, description="A succeeded build's id; or give `stage` and `definition`.")
    stage: int | str | None = Field(None, description="What this stage holds (id or name), with `definition`.")
    definition: int | str | None = None
    architecture: str = Field("", max_length=16)
    rootfs: RootFilesystem = RootFilesystem.XFS
    configuration: int | str | None = Field(None, description="A saved configuration of the team, by id or name.")
    config: dict[str, Any] | None = Field(None, description="Or a configuration given here, as config.json reads.")


class ConfigurationOut(Schema):
    id: int
    team: str
    name: str
    description: str
    config: dict[str, Any]
    accepted_types: list[str]
    warnings: list[str]
    created_at: datetime
    updated_at: datetime


class ConfigurationIn(Body):
    team: str = Field(..., description="The team's slug.")
    name: str = Field(..., min_length=1, max_length=100)
    description: str = Field("", max_length=300)
    config: dict[str, Any] = Field(..., description="bootc-image-builder's configuration (customizations: user, ...)")


class KickstartIn(Body):
    definition: int | str
    stage: int | str | None = Field(None, description="Install what this stage's tag holds (follows promotions).")
    build: int | None = Field(None, description="Or one build's digest (pinned); then `track` names the stage to follow.")
    track: int | str | None = Field(None, description="The stage whose tag the host follows afterwards.")
    transport: str = "registry"
    skip_signature_verification: bool = False
    username: str = Field("ops", max_length=32)
    ssh_key: str = Field(..., min_length=1, max_length=4000)
    password_hash: str = Field("", max_length=1024)
    groups: str = Field("wheel", max_length=500, description="Comma-separated.")
    layout: str = "lvm"
    filesystem: str = "xfs"
    disk: str = Field("", max_length=200)
    timezone: str = Field("Etc/UTC", max_length=64)


class KickstartOut(Schema):
    definition: str
    image: str
    kickstart: str


# --- Serialising -----------------------------------------------------------------------------------------------------


def disk_image_out(request, disk_image):
    run = disk_image.run
    definition = disk_image.definition
    return {
        "id": disk_image.pk, "team": disk_image.team.slug, "definition": f"{definition.team.slug}/{definition.name}",
        "build": disk_image.build_id, "stage": disk_image.stage.name if disk_image.stage_id else None,
        "digest": disk_image.digest, "types": list(disk_image.types), "architecture": disk_image.architecture,
        "rootfs": disk_image.rootfs, "configuration": disk_image.preset_name or None, "status": run.status,
        "phase": run.phase, "reason": run.exit_reason or None, "hint": disk_image.hint,
        "created_at": disk_image.created_at, "finished_at": run.finished_at,
        "artifacts": [{"type": a.image_type, "filename": a.filename, "size": a.size, "sha256": a.sha256,
                       "format": a.format, "ami_id": a.ami_id, "deleted": a.deleted_at is not None,
                       "download_url": request.build_absolute_uri(a.get_absolute_url())}
                      for a in disk_image.artifacts.all()],
        "run": run.pk, "url": request.build_absolute_uri(disk_image.get_absolute_url()),
    }


def configuration_out(preset):
    return {"id": preset.pk, "team": preset.team.slug, "name": preset.name, "description": preset.description,
            "config": preset.config, "accepted_types": sorted(diskconfig.accepted_types(preset.config)),
            "warnings": list(preset.warnings or []), "created_at": preset.created_at, "updated_at": preset.updated_at}


def _disk_images():
    return DiskImage.objects.with_related().prefetch_related("artifacts")


def _invalid(field, message):
    return Problem(400, f"body.{field}: {message}", slug="invalid", errors=[{"field": f"body.{field}", "message": message}])


def _definition(request, value, action=Action.DEVELOP):
    try:
        return get_definition_by_reference_for_user(request.user, value, action=action)
    except Http404:
        raise _invalid("definition", f"no image definition {value!r} in your teams") from None


def _stage(definition, value, field="stage"):
    stages = Stage.objects.filter(team=definition.team).select_related("team")
    text = str(value)
    stage = (stages.filter(pk=int(text)).first() if text.isdecimal() and text.isascii()
             else stages.filter(name=text).first() if "\x00" not in text else None)
    if stage is None:
        raise _invalid(field, f"{definition.team} has no stage {value!r}")
    return stage


# --- Disk images -----------------------------------------------------------------------------------------------------


@disk_images.get("", response=page_of(DiskImageOut), summary="Disk images (the UI's filters: q, status, type)")
def disk_image_list(request, team: str | None = None, definition: str | None = None, q: str = "",
                    status: RunStatus | None = None, type: DiskImageType | None = None, cursor: str | None = None,
                    limit: int = PAGE_LIMIT_DEFAULT):
    queryset = DiskImage.objects.visible_to(request.user).with_related().prefetch_related("artifacts")
    if team:
        queryset = queryset.filter(team__slug=team)
    if definition:
        queryset = queryset.filter(definition=get_definition_by_reference_for_user(request.user, definition))
    if q.strip():
        queryset = queryset.filter(Q(definition__name__icontains=q.strip()) | Q(digest__icontains=q.strip())
                                   | Q(preset_name__icontains=q.strip()))
    if status:
        queryset = queryset.filter(run__status=status)
    if type:
        queryset = queryset.filter(types__icontains=f'"{type}"')
    return paginate(queryset, cursor=cursor, limit=limit, key=lambda d: disk_image_out(request, d))


@disk_images.get("{disk_image_id}/", response=DiskImageOut, summary="A disk image, its status and its files")
def disk_image_detail(request, disk_image_id: int):
    get_disk_image_for_user(request.user, disk_image_id)
    return disk_image_out(request, _disk_images().get(pk=disk_image_id))


@disk_images.post("", response={201: DiskImageOut}, auth=token_auth(Scope.BUILD),
             summary="Convert a build's digest (or what a stage holds) into disk images")
def disk_image_create(request, payload: DiskImageIn):
    build = stage = definition = preset = None
    if payload.build is not None:
        if payload.stage is not None:
            raise _invalid("build", "give `build`, or `stage` with `definition`, not both")
        try:
            build = get_build_for_user(request.user, payload.build, action=Action.DEVELOP)
        except Http404:
            raise _invalid("build", f"no build {payload.build} in your teams") from None
        team = build.definition.team
    elif payload.stage is not None and payload.definition is not None:
        definition = _definition(request, payload.definition)
        stage = _stage(definition, payload.stage)
        team = definition.team
    else:
        raise _invalid("build", "give `build` (a build's id), or `stage` with `definition`")
    if payload.configuration is not None and payload.config is not None:
        raise _invalid("configuration", "give a saved `configuration` or a `config`, not both")
    if payload.configuration is not None:
        text = str(payload.configuration)
        presets = DiskImagePreset.objects.filter(team=team)
        preset = (presets.filter(pk=int(text)).first() if text.isdecimal() and text.isascii()
                  else presets.filter(name=text).first() if "\x00" not in text else None)
        if preset is None:
            raise _invalid("configuration", f"{team} has no saved configuration {payload.configuration!r}")
    disk_image = services.disk_image_request(
        user=request.user, types=[str(t) for t in payload.types], build=build, stage=stage, definition=definition,
        architecture=payload.architecture.strip(), rootfs=payload.rootfs, preset=preset, config=payload.config,
        trigger="api", request=request)
    return Status(201, disk_image_out(request, _disk_images().get(pk=disk_image.pk)))


@disk_images.post("{disk_image_id}/retry/", response={201: DiskImageOut}, auth=token_auth(Scope.BUILD),
             summary="Convert again, with the same settings")
def disk_image_retry(request, disk_image_id: int):
    disk_image = get_disk_image_for_user(request.user, disk_image_id, action=Action.DEVELOP)
    again = services.disk_image_retry(disk_image=disk_image, user=request.user, request=request)
    return Status(201, disk_image_out(request, _disk_images().get(pk=again.pk)))


# --- Configurations --------------------------------------------------------------------------------------------------


@configurations.get("", response=page_of(ConfigurationOut), summary="The teams' saved disk image configurations")
def configuration_list(request, team: str | None = None, name: str | None = None, cursor: str | None = None,
                       limit: int = PAGE_LIMIT_DEFAULT):
    queryset = DiskImagePreset.objects.visible_to(request.user).select_related("team")
    if team:
        queryset = queryset.filter(team__slug=team)
    if name:
        queryset = queryset.filter(name=name)
    return paginate(queryset, cursor=cursor, limit=limit, key=configuration_out)


@configurations.get("{configuration_id}/", response=ConfigurationOut, summary="A saved configuration")
def configuration_detail(request, configuration_id: int):
    return configuration_out(get_preset_for_user(request.user, configuration_id))


@configurations.post("", response={201: ConfigurationOut}, auth=token_auth(Scope.BUILD),
             summary="Save a configuration for the team (checked as bootc-image-builder would)")
def configuration_create(request, payload: ConfigurationIn):
    team = get_team_for_user(request.user, payload.team, action=Action.DEVELOP)
    preset = services_presets.preset_save(team=team, user=request.user, name=payload.name, config=payload.config,
                                  source_format="json", description=payload.description, request=request)
    return Status(201, configuration_out(preset))


@configurations.delete("{configuration_id}/", response={204: None}, auth=token_auth(Scope.BUILD),
               summary="Delete a saved configuration (disk images made with it keep their copy)")
def configuration_delete(request, configuration_id: int):
    preset = get_preset_for_user(request.user, configuration_id, action=Action.DEVELOP)
    services_presets.preset_delete(preset=preset, user=request.user, request=request)
    return Status(204, None)


# --- Kickstarts ------------------------------------------------------------------------------------------------------


@kickstarts.post("", response=KickstartOut, auth=token_auth(Scope.BUILD),
             summary="An Anaconda kickstart that installs a stage's image (or a build's digest) with ostreecontainer")
def kickstart_create(request, payload: KickstartIn):
    definition = _definition(request, payload.definition, action=Action.VIEW)
    if not services.can_kickstart(request.user, definition.team):
        raise Problem(403, f"Your role in {definition.team} does not allow you to write kickstarts (developers and "
                           "operators may).", slug="forbidden")
    stage = _stage(definition, payload.stage) if payload.stage is not None else None
    track = _stage(definition, payload.track, field="track") if payload.track is not None else stage
    build = None
    if payload.build is not None:
        try:
            build = get_build_for_user(request.user, payload.build)
        except Http404:
            raise _invalid("build", f"no build {payload.build} in your teams") from None
        if build.definition_id != definition.pk or not build.succeeded:
            raise _invalid("build", f"build {payload.build} is not a succeeded build of {definition}")
    if (stage is None) == (build is None):
        raise _invalid("stage", "give the `stage` to install from, or a `build` (with `track`)")
    if track is None:
        raise _invalid("track", "say which stage's tag the host follows afterwards")
    # The page's own form checks the user's answers (user name, SSH key, password hash, groups, time zone, disk).
    form = KickstartForm(
        {"source": "stage" if stage else "build", "definition": definition.pk, "stage": stage.pk if stage else "",
         "build": build.pk if build else "", "track": track.pk, "transport": payload.transport,
         "skip_signature_verification": payload.skip_signature_verification, "username": payload.username,
         "ssh_key": payload.ssh_key, "password_hash": payload.password_hash, "groups": payload.groups,
         "layout": payload.layout, "filesystem": payload.filesystem, "disk": payload.disk, "timezone": payload.timezone},
        definitions=ImageDefinition.objects.filter(pk=definition.pk),
        stages=Stage.objects.filter(team=definition.team),
        builds=Build.objects.filter(pk=build.pk) if build else Build.objects.none(), show_team=False)
    if not form.is_valid():
        errors = [{"field": f"body.{name}" if name != "__all__" else "body", "message": " ".join(messages)}
                  for name, messages in form.errors.items()]
        raise Problem(400, f"{errors[0]['field']}: {errors[0]['message']}", slug="invalid", errors=errors)
    data = form.cleaned_data
    image_ref, digest = (stage.reference(definition), "") if stage else (build.image_ref, build.digest)
    spec = KickstartSpec(
        image_ref=image_ref, track_ref=track.reference(definition), transport=data["transport"],
        skip_signature_verification=data["skip_signature_verification"], username=data["username"],
        ssh_key=data["ssh_key"], password_hash=data["password_hash"], groups=data["groups"], layout=data["layout"],
        filesystem=data["filesystem"], disk=data["disk"], timezone=data["timezone"],
        title=f"{definition} from {stage.name if stage else build}")
    text = services.kickstart_generate(user=request.user, definition=definition, spec=spec, stage=stage, digest=digest,
                                       request=request)
    return {"definition": f"{definition.team.slug}/{definition.name}", "image": image_ref, "kickstart": text}
