"""Pages for disk images: requests, conversions with their live log and artifacts, downloads (with HTTP range requests),
a team's disk image settings (retention, AWS credentials) and kickstarts. Saved configurations (presets) have theirs in
builds/diskimages/views_presets.py.

Every object comes through `builds.diskimages.access` (or `builds.access` for the image it converts); every change
through `builds.diskimages.services`.
"""

from __future__ import annotations

import re
import shlex

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q, Sum
from django.http import Http404, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from builds.access import get_build_for_user, get_definition_for_user
from builds.models import Build, ImageDefinition
from builds.releases.models import Stage
from builds.views import search_query
from portal import objectstore
from portal.access import can, get_team_for_user, teams_where
from portal.models import Action, RunStatus, Team
from portal.services import audit
from portal.views import _viewer_context, current_team, error_text

from . import converters, diskconfig, services, services_presets
from .access import (
    get_artifact_for_user,
    get_cloud_credential_for_user,
    get_disk_image_for_user,
)
from .forms import (
    TYPE_HELP,
    CloudCredentialForm,
    DiskImageRequestForm,
    KickstartForm,
    RetentionForm,
    add_service_errors,
)
from .kickstart import KickstartSpec
from .models import Artifact, CloudCredential, DiskImage, DiskImagePreset, DiskImageType
from .views_boottests import digest_boot_tests

PAGE_SIZE = 25


def scoped(request, queryset, team_field="team"):
    """Limit a visible queryset to the team the switcher points at."""
    team = current_team(request)
    return queryset.filter(**{team_field: team}) if team is not None else queryset


# --- Conversions -----------------------------------------------------------------------------------------------------


@login_required
def diskimage_list(request):
    disk_images = scoped(request, DiskImage.objects.visible_to(request.user)).with_related().annotate(
        file_count=Count("artifacts", filter=Q(artifacts__deleted_at__isnull=True)),
        file_bytes=Sum("artifacts__size", filter=Q(artifacts__deleted_at__isnull=True)))
    query = search_query(request)
    if query:
        disk_images = disk_images.filter(Q(definition__name__icontains=query) | Q(digest__icontains=query)
                                         | Q(preset_name__icontains=query))
    status = request.GET.get("status", "")
    if status in RunStatus.values:
        disk_images = disk_images.filter(run__status=status)
    image_type = request.GET.get("type", "")
    if image_type in DiskImageType.values:
        disk_images = disk_images.filter(types__icontains=f'"{image_type}"')
    page = Paginator(disk_images.order_by("-created_at", "-id"), PAGE_SIZE).get_page(request.GET.get("page"))
    active = any(d.run.is_active for d in page)
    context = {
        "page": page, "query": query, "status": status, "image_type": image_type,
        "statuses": RunStatus.choices, "types": DiskImageType.choices, "active": active,
        "can_request": teams_where(request.user, Action.DEVELOP).exists(),
        "filtered": bool(query or status or image_type),
        "settings_teams": [current_team(request)] if current_team(request) else list(
            Team.objects.visible_to(request.user).order_by("name")[:20]),
    }
    if request.htmx and request.htmx.target == "diskimage-rows":
        return render(request, "diskimages/_rows.html", context)
    return render(request, "diskimages/list.html", context)


DIGEST_SHOWN = 5


@login_required
def digest_images(request, digest):
    """The disk images of one digest the user may see (newest first), as a fragment that build and promotion pages load
    with htmx; `?definition=<pk>` keeps it to one image definition."""
    disk_images = DiskImage.objects.visible_to(request.user).for_digest(digest).select_related("run")
    definition = request.GET.get("definition", "")
    if definition.isdigit():
        disk_images = disk_images.filter(definition_id=int(definition))
    found = list(disk_images.order_by("-pk")[:DIGEST_SHOWN + 1])
    return render(request, "diskimages/_digest_images.html", {
        "digest": digest, "disk_images": found[:DIGEST_SHOWN], "more": len(found) > DIGEST_SHOWN,
        **digest_boot_tests(request.user, digest)})


def _request_choices(user, team=None):
    teams = teams_where(user, Action.DEVELOP)
    if team is not None:
        teams = teams.filter(pk=team.pk)
    builds = (Build.objects.succeeded().filter(definition__team__in=teams).with_related()
              .order_by("-run__created_at", "-id")[:300])
    return {
        "builds": Build.objects.with_related().filter(pk__in=[b.pk for b in builds]).order_by("-run__created_at", "-id"),
        "definitions": ImageDefinition.objects.filter(team__in=teams).select_related("team").order_by("team__name",
                                                                                                        "name"),
        "stages": Stage.objects.filter(team__in=teams).select_related("team").order_by("team__name", "position"),
        "presets": DiskImagePreset.objects.filter(team__in=teams).select_related("team").order_by("team__name", "name"),
        "credentials": CloudCredential.objects.filter(team__in=teams).select_related("team"),
        "builder_choices": services.builder_choices(),
        "show_team": teams.count() > 1,
    }


@login_required
def diskimage_create(request):
    if not teams_where(request.user, Action.DEVELOP).exists():
        raise PermissionDenied("You need the developer role in a team to make disk images.")
    initial, source_build, source_stage, team = {}, None, None, None
    if request.GET.get("build"):
        source_build = get_build_for_user(request.user, request.GET["build"], action=Action.DEVELOP)
        team = source_build.definition.team
        initial.update(source="build", build=source_build.pk)
    elif request.GET.get("definition"):
        definition = get_definition_for_user(request.user, request.GET["definition"], action=Action.DEVELOP)
        team = definition.team
        initial.update(source="stage", definition=definition.pk)
        try:
            stage = Stage.objects.filter(team=team, pk=request.GET.get("stage") or 0).first()
        except (ValueError, TypeError):  # ?stage=abc: a link gone wrong preselects nothing
            stage = None
        if stage is not None:
            initial["stage"] = stage.pk
            source_stage = stage
    choices = _request_choices(request.user, team)
    form = DiskImageRequestForm(request.POST or None, initial=initial, **choices)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            disk_image = services.disk_image_request(
                user=request.user, types=data["types"], build=data.get("build"), stage=data.get("stage"),
                definition=data.get("definition"), architecture=data.get("architecture") or "",
                rootfs=data["rootfs"], preset=data.get("preset"), config=data.get("config_text"),
                backend=data["builder_image"][0], builder_image=data["builder_image"][1], aws_bucket=data["aws_bucket"].strip(),
                aws_region=data["aws_region"].strip(), aws_ami_name=data["aws_ami_name"].strip(),
                aws_credential=data.get("aws_credential"), request=request,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            if data.get("save_as") and data.get("config_text") is not None:
                try:
                    services_presets.preset_save(team=disk_image.team, user=request.user, name=data["save_as"],
                                           config=data["config_text"], source_format=getattr(form, "config_format",
                                                                                             "toml"), request=request)
                    messages.info(request, f"Saved the configuration as {data['save_as']!r}.")
                except ValidationError as exc:
                    messages.warning(request, f"The conversion was queued, but the configuration was not saved: "
                                              f"{error_text(exc)}")
            disk_image.run.refresh_from_db(fields=["status", "exit_reason"])
            if disk_image.run.status == RunStatus.FAILED:  # no builder, or no broker to hand it to
                messages.error(request, disk_image.run.exit_reason)
            else:
                messages.success(request, f"Queued {', '.join(disk_image.types)} of {disk_image.definition.name}: the "
                                          "log below follows the conversion.")
            return redirect(disk_image)
    return render(request, "diskimages/request.html", {
        "form": form, "source_build": source_build, "source_stage": source_stage, "type_help": TYPE_HELP,
        "has_builds": source_build is not None or choices["builds"].exists(),
        "iso_types": diskconfig.ISO_TYPES, "deprecated_types": diskconfig.DEPRECATED_TYPES, "presets": choices["presets"],
        "preset_types": {p.pk: diskconfig.accepted_types(p.config) for p in choices["presets"]},
    })


def _detail_context(request, disk_image):
    run = disk_image.run
    artifacts = list(disk_image.artifacts.all())
    return {
        "di": disk_image, "run": run, "artifacts": artifacts,
        "present_bytes": sum(a.size for a in artifacts if a.present),
        "can_develop": can(request.user, disk_image.team, Action.DEVELOP),
        "config_lines": diskconfig.summary(disk_image.config),
        "config_toml": diskconfig.render_toml(disk_image.config) if disk_image.config else "",
        "commands": [converters_display(argv) for argv in disk_image.commands],
        "retention": services.retention_for(disk_image.team),
    }


def converters_display(argv):
    return shlex.join(argv)


@login_required
def diskimage_detail(request, pk):
    disk_image = get_disk_image_for_user(request.user, pk)
    context = _detail_context(request, disk_image)
    if request.htmx and request.htmx.target == "diskimage-live":
        return render(request, "diskimages/_live.html", context, status=286 if disk_image.run.is_finished
                      else 200)
    context.update(_viewer_context(disk_image.run))
    return render(request, "diskimages/detail.html", context)


@login_required
@require_POST
def diskimage_delete_files(request, pk):
    disk_image = get_disk_image_for_user(request.user, pk, action=Action.DEVELOP)
    try:
        count = services.disk_image_delete_files(disk_image=disk_image, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Deleted {count} file{'s' if count != 1 else ''}; the record of what was made stays.")
    return redirect(disk_image)


@login_required
def diskimage_config(request, pk):
    """The configuration a conversion used, as the config.toml the builder read."""
    disk_image = get_disk_image_for_user(request.user, pk)
    response = HttpResponse(diskconfig.render_toml(disk_image.config), content_type="application/toml; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(False, f"config-{disk_image.pk}.toml")
    return response


# --- Artifacts: download with range requests ------------------------------------------------------------------------

RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int):
    """(start, end) inclusive for a single satisfiable `bytes=` range, "unsatisfiable", or None to send everything.

    Multiple ranges and malformed headers get the whole file (RFC 9110 lets a server ignore Range).
    """
    match = RANGE_RE.match((header or "").strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


@login_required
def artifact_download(request, key):
    """GET/HEAD one artifact, whole or by range (so multi-GB downloads resume); the ETag is its sha256.

    The access check, the range's validity, HEAD and the audit record are answered here; the bytes come from object
    storage by presigned URL, from the proxy's disk, or (make run) from this process: `portal.objectstore`."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    artifact = get_artifact_for_user(request.user, key)
    if not artifact.present:
        raise Http404("This file was deleted.")
    size = artifact.size
    etag = f'"{artifact.sha256}"'
    wanted = parse_range(request.headers.get("Range", ""), size)
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        wanted = None  # the client holds another version: send it all
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": content_disposition_header(True, artifact.filename),
        "Cache-Control": "private, no-transform",
        "X-Content-Type-Options": "nosniff",
        "X-Checksum-Sha256": artifact.sha256,
    }
    content_type = converters.CONTENT_TYPES.get(artifact.image_type, "application/octet-stream")
    if wanted == "unsatisfiable":
        response = HttpResponse(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        return response
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
    length = max(end - start + 1, 0)
    headers["Content-Length"] = str(length)
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        response = HttpResponse(status=status, content_type=content_type, headers=headers)
        response["Content-Length"] = str(length)
        return response
    try:
        response = objectstore.download_response(artifact.file.storage, artifact.file.name, start=start,
                                                 end=end, status=status, content_type=content_type,
                                                 filename=artifact.filename, headers=headers)
    except objectstore.StorageUnavailable as exc:
        return HttpResponse(f"{exc}\n", status=503, content_type="text/plain; charset=utf-8")
    if response is None:
        raise Http404("The file is missing from storage.")
    if start == 0:
        audit(action="artifact.download", actor=request.user, team=artifact.disk_image.team, obj=artifact,
              request=request, summary=f"downloaded {artifact.filename}"
                                       f"{'' if status == 200 else f' (bytes {start}-{end})'}",
              detail={"sha256": artifact.sha256, "bytes": length, "via": objectstore.downloads_via()})
    return response


@login_required
def artifact_checksum(request, key):
    """`sha256sum -c` input for one artifact."""
    artifact = get_artifact_for_user(request.user, key)
    response = HttpResponse(artifact.checksum_text(), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, f"{artifact.filename}.sha256")
    return response


@login_required
@require_POST
def artifact_delete(request, key):
    artifact = get_artifact_for_user(request.user, key, action=Action.DEVELOP)
    services.artifact_delete(artifact=artifact, user=request.user, request=request)
    messages.success(request, f"Deleted {artifact.filename}; its checksum and size stay on record.")
    return redirect(artifact.disk_image)


# --- A team's disk image settings: retention and AWS credentials ----------------------------------------------------


@login_required
def diskimage_settings(request, slug):
    team = get_team_for_user(request.user, slug)
    is_admin = can(request.user, team, Action.ADMIN)
    policy = services.retention_for(team)
    retention_form = RetentionForm(request.POST if request.POST.get("form") == "retention" else None,
                                   initial={"keep_days": policy.keep_days, "keep_latest": policy.keep_latest})
    credential_form = CloudCredentialForm(request.POST if request.POST.get("form") == "credential" else None)
    if request.method == "POST":
        if not is_admin:
            raise PermissionDenied(f"Only admins of {team} change its disk image settings.")
        if request.POST.get("form") == "retention" and retention_form.is_valid():
            services.retention_save(team=team, user=request.user, request=request, **retention_form.cleaned_data)
            messages.success(request, "Saved the retention policy; it applies within the hour.")
            return redirect("diskimages:settings", slug=team.slug)
        if request.POST.get("form") == "credential" and credential_form.is_valid():
            try:
                services_presets.cloud_credential_save(team=team, user=request.user, request=request,
                                                 **credential_form.cleaned_data)
            except ValidationError as exc:
                for key, errors in exc.message_dict.items():
                    for error in errors:
                        credential_form.add_error(key if key in credential_form.fields else None, error)
            else:
                messages.success(request, "Saved the AWS credentials. The secret is stored encrypted and never shown "
                                          "again.")
                return redirect("diskimages:settings", slug=team.slug)
    stored = Artifact.objects.present().filter(disk_image__team=team).aggregate(n=Count("id"), bytes=Sum("size"))
    expiring = services.expired_artifacts(team).count() if policy.keep_days else 0
    return render(request, "diskimages/settings.html", {
        "team": team, "is_admin": is_admin, "policy": policy, "retention_form": retention_form,
        "credential_form": credential_form, "credentials": CloudCredential.objects.filter(team=team),
        "stored": stored, "expiring": expiring,
    })


@login_required
@require_POST
def cloud_credential_delete(request, pk):
    credential = get_cloud_credential_for_user(request.user, pk)
    services_presets.cloud_credential_delete(credential=credential, user=request.user, request=request)
    messages.success(request, f"Deleted the AWS credentials {credential.name!r}.")
    return redirect("diskimages:settings", slug=credential.team.slug)


# --- Kickstarts ------------------------------------------------------------------------------------------------------


@login_required
def kickstart_create(request):
    teams = [t for t in teams_where(request.user, Action.VIEW) if services.can_kickstart(request.user, t)]
    if not teams:
        raise PermissionDenied("Developers and operators of a team write kickstarts.")
    initial = {}
    if request.GET.get("build"):
        build = get_build_for_user(request.user, request.GET["build"])
        initial.update(source="build", definition=build.definition_id, build=build.pk)
    elif request.GET.get("definition"):
        definition = get_definition_for_user(request.user, request.GET["definition"])
        initial.update(definition=definition.pk)
        if request.GET.get("stage"):
            initial["stage"] = request.GET["stage"]
    team_ids = [t.pk for t in teams]
    form = KickstartForm(
        request.POST or None, initial=initial,
        definitions=ImageDefinition.objects.filter(team__in=team_ids).select_related("team").order_by("team__name",
                                                                                                        "name"),
        stages=Stage.objects.filter(team__in=team_ids).select_related("team").order_by("team__name", "position"),
        builds=Build.objects.succeeded().filter(definition__team__in=team_ids).with_related().order_by(
            "-run__created_at", "-id"),
        show_team=len(teams) > 1,
    )
    text = ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        definition = data["definition"]
        stage = data.get("stage") if data["source"] == "stage" else None
        track = data.get("track") or stage
        if stage is not None:
            image_ref, digest = stage.reference(definition), ""
        else:
            image_ref, digest = data["build"].image_ref, data["build"].digest
        spec = KickstartSpec(
            image_ref=image_ref, track_ref=track.reference(definition), transport=data["transport"],
            skip_signature_verification=data["skip_signature_verification"], username=data["username"],
            ssh_key=data["ssh_key"], password_hash=data["password_hash"], groups=data["groups"],
            layout=data["layout"], filesystem=data["filesystem"], disk=data["disk"], timezone=data["timezone"],
            title=f"{definition} from {stage.name if stage else data['build']}",
        )
        try:
            text = services.kickstart_generate(user=request.user, definition=definition, spec=spec, stage=stage,
                                                 digest=digest, request=request)
        except ValidationError as exc:
            form.add_error(None, error_text(exc))
        else:
            if request.POST.get("download"):
                response = HttpResponse(text, content_type="text/plain; charset=utf-8")
                name = f"{definition.name}-{stage.name if stage else 'build-' + str(data['build'].number)}.ks"
                response["Content-Disposition"] = content_disposition_header(True, name)
                return response
    return render(request, "diskimages/kickstart.html", {
        "form": form, "text": text, "has_definitions": form.fields["definition"].queryset.exists()})

