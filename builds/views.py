"""Pages for image definitions, revisions, builds, builders and image retention (a team's integrations page is in
`builds.views_integrations`). Every object comes through `builds.access`; every change through `builds.services`."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal import registry
from portal.access import can, teams_where
from portal.forms import add_service_errors
from portal.models import Action, RunStatus, Team
from portal.views import _viewer_context, current_team, error_text

from . import compare, hygiene, multiarch, queues, retention, services, starters, trends
from .access import (
    get_build_for_user,
    get_builder_for_user,
    get_definition_for_user,
    get_revision_for_user,
)
from .containerfile_checks import validate_text
from .forms import (
    BuilderForm,
    BuildFilter,
    DefinitionForm,
    ImageRetentionPolicyForm,
    RevisionForm,
)
from .models import (
    LABEL_PREFIX,
    Build,
    Builder,
    ImageDefinition,
)


def search_query(request, limit=200):
    """The list's ?q= search text: NUL characters dropped (PostgreSQL text cannot hold them), at most `limit` long."""
    return request.GET.get("q", "").replace("\x00", "").strip()[:limit]


# --- Image definitions -----------------------------------------------------------------------------------------------


@login_required
def definition_list(request):
    team = current_team(request)
    definitions = ImageDefinition.objects.visible_to(request.user).select_related("team").with_latest_build()
    if team is not None:
        definitions = definitions.filter(team=team)
    query = search_query(request)
    if query:
        definitions = definitions.filter(Q(name__icontains=query) | Q(description__icontains=query)
                                         | Q(repository__icontains=query))
    page = Paginator(definitions.order_by("team__name", "name"), 25).get_page(request.GET.get("page"))
    latest = Build.objects.with_related().in_bulk([d.latest_build_id for d in page if d.latest_build_id])
    rows = [(d, latest.get(d.latest_build_id)) for d in page]
    can_create = teams_where(request.user, Action.DEVELOP).exists()
    template = "builds/_definition_rows.html" if request.htmx and request.htmx.target == "definition-rows" else \
        "builds/definition_list.html"
    return render(request, template, {"page": page, "rows": rows, "query": query, "can_create": can_create})


@login_required
def definition_create(request):
    teams = teams_where(request.user, Action.DEVELOP)
    if not teams.exists():
        raise PermissionDenied("You need the developer role in a team to add image definitions.")
    form = DefinitionForm(request.POST or None, teams=teams, initial={"team": current_team(request)})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            definition = services.definition_create(
                team=data["team"], user=request.user, name=data["name"], description=data["description"],
                repository=data["repository"], platforms=data["platforms"], build_args=data["build_args"],
                schedule=data["schedule"], timeout_minutes=data["timeout_minutes"], request=request,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Created {definition}. Now save its first revision.")
            target = reverse("builds:revision_create", args=[definition.pk])
            if data.get("starter"):
                target += f"?starter={data['starter']}"
            return redirect(target)
    return render(request, "builds/definition_form.html", {"form": form, "definition": None,
                                                           "status": 400 if form.errors else 200},
                  status=400 if form.errors else 200)


@login_required
def definition_detail(request, pk):
    definition = get_definition_for_user(request.user, pk)
    revisions = list(definition.revisions.select_related("author").order_by("-number")[:10])
    builds = Build.objects.with_related().filter(definition=definition).order_by("-number")
    page = Paginator(builds, 15).get_page(request.GET.get("page"))
    if request.htmx and request.htmx.target == "build-rows":
        # 286 tells htmx to stop polling once nothing is queued or running.
        return render(request, "builds/_build_rows.html", {"builds": page, "show_definition": False},
                      status=200 if builds.active().exists() else 286)
    current = revisions[0] if revisions else None
    latest_success = builds.succeeded().first()
    return render(request, "builds/definition_detail.html", {
        **_stages_and_hosts(definition),
        "definition": definition, "revisions": revisions, "revision_count": definition.revisions.count(),
        "current": current, "page": page, "builds": page,
        "can_develop": can(request.user, definition.team, Action.DEVELOP),
        "latest_success": latest_success,
        "active": builds.active().exists(),
        "trends": trends.build_trends(definition),
    })


def _stages_and_hosts(definition):
    """What each stage of the team holds of `definition` now, and who follows and runs it: fragments that the releases
    and hosts apps serve ("definition.stages", "definition.hosts") and the page loads."""
    return {"stages_url": registry.fragment_url("definition.stages", definition.pk),
            "hosts_url": registry.fragment_url("definition.hosts", definition.pk),
            "release_map_url": registry.fragment_url("definition.release_map", definition.pk)}


@login_required
def definition_edit(request, pk):
    definition = get_definition_for_user(request.user, pk, action=Action.DEVELOP)
    form = DefinitionForm(request.POST or None, teams=Team.objects.filter(pk=definition.team_id), instance=definition)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.definition_update(
                definition=definition, user=request.user, request=request, description=data["description"],
                repository=data["repository"] or definition.repository, platforms=data["platforms"],
                build_args=data["build_args"], schedule=data["schedule"], timeout_minutes=data["timeout_minutes"],
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Saved the settings of {definition}.")
            return redirect(definition)
    return render(request, "builds/definition_form.html", {"form": form, "definition": definition},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def definition_delete(request, pk):
    definition = get_definition_for_user(request.user, pk, action=Action.DEVELOP)
    name = str(definition)
    try:
        services.definition_delete(definition=definition, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect(definition)
    messages.success(request, f"Deleted {name} with its revisions and build records; its images stay in the registry.")
    return redirect("builds:definition_list")


@login_required
@require_POST
def definition_build(request, pk):
    """The Build button: the current revision, for every platform of the definition."""
    definition = get_definition_for_user(request.user, pk, action=Action.DEVELOP)
    revision = definition.current_revision()
    if revision is None:
        messages.error(request, "Save a revision first: there is nothing to build yet.")
        return redirect(definition)
    return _start_builds(request, revision)


def _start_builds(request, revision):
    try:
        builds = services.build_start_all(revision=revision, user=request.user, trigger="button", request=request)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, error_text(exc))
        return redirect(revision.definition)
    names = ", ".join(f"build {b.number} ({'manifest list of ' if b.is_manifest_list else ''}"
                      f"{', '.join(b.platforms)})" for b in builds)
    unqueued = [b for b in builds if _ended_at_once(b)]
    if unqueued:
        messages.error(request, f"{names} of {revision}: {unqueued[0].run.exit_reason}")
    else:
        messages.success(request, f"Queued {names} of {revision}.")
    return redirect(builds[0] if len(builds) == 1 else revision.definition)


def _ended_at_once(build):
    """Whether the build ended as it was started (no builder, or no broker to hand it to)."""
    build.run.refresh_from_db(fields=["status", "exit_reason"])
    return build.run.status == RunStatus.FAILED


# --- Revisions -------------------------------------------------------------------------------------------------------


@login_required
def revision_create(request, pk):
    definition = get_definition_for_user(request.user, pk, action=Action.DEVELOP)
    previous = definition.current_revision()
    initial = {}
    if previous is not None:
        initial = {"containerfile": previous.containerfile, "context_kind": previous.context_kind,
                   "git_url": previous.git_url, "git_ref": previous.git_ref, "git_subdir": previous.git_subdir,
                   "keep_files": [f.path for f in previous.context_files.all()]}
    elif request.GET.get("starter"):
        initial = {"containerfile": starters.render_choice(request.GET["starter"])}
    form = RevisionForm(request.POST or None, request.FILES or None, previous=previous, initial=initial)
    report = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if request.POST.get("check"):
            report = validate_text(data["containerfile_data"], build_args=definition.build_args)
        else:
            try:
                revision = services.revision_create(
                    definition=definition, user=request.user, containerfile=data["containerfile_data"],
                    message=data["message"], context_kind=data["context_kind"], git_url=data["git_url"].strip(),
                    git_ref=data["git_ref"].strip(), git_subdir=data["git_subdir"].strip(),
                    context_files=data["context_files"], request=request,
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                if revision.warnings:
                    where = (f"open r{revision.number}, linked at the top, to read them" if request.POST.get("and_build")
                             else "see below")
                    count = len(revision.warnings)
                    messages.warning(request, f"Saved {revision} with {count} warning{'s' if count != 1 else ''}; {where}.")
                else:
                    messages.success(request, f"Saved {revision}.")
                if request.POST.get("and_build"):
                    return _start_builds(request, revision)
                return redirect(revision)
    return render(request, "builds/revision_form.html", {
        "definition": definition, "form": form, "previous": previous, "report": report,
        "starters": starters.choices()[1:], "templates_allowed": previous is None,
    }, status=400 if form.errors else 200)


@login_required
@require_POST
def revision_check(request, pk):
    """The checks a save would make, as JSON, for the editor's marks at each line as the Containerfile is written
    (static/builds/editor.js). Saves nothing; the same access as writing a revision."""
    definition = get_definition_for_user(request.user, pk, action=Action.DEVELOP)
    report = validate_text(request.POST.get("containerfile", ""), build_args=definition.build_args)
    return JsonResponse({"issues": [issue.as_dict() for issue in report.issues]})


@login_required
def revision_detail(request, pk, number):
    revision = get_revision_for_user(request.user, pk, number)
    definition = revision.definition
    builds = Build.objects.with_related().filter(revision=revision).order_by("-number")[:20]
    other_numbers = list(definition.revisions.exclude(pk=revision.pk).order_by("-number").values_list("number",
                                                                                                       flat=True)[:50])
    return render(request, "builds/revision_detail.html", {
        "revision": revision, "definition": definition, "lines": compare.highlight_lines(revision.containerfile),
        "builds": builds, "files": revision.context_files.all(), "other_numbers": other_numbers,
        "can_develop": can(request.user, definition.team, Action.DEVELOP),
        "is_current": not definition.revisions.filter(number__gt=revision.number).exists(),
    })


@login_required
def revision_diff(request, pk):
    definition = get_definition_for_user(request.user, pk)
    numbers = list(definition.revisions.order_by("-number").values_list("number", flat=True))
    if len(numbers) < 2:
        messages.info(request, "There is only one revision so far: nothing to compare.")
        return redirect(definition)
    try:
        new_number = int(request.GET.get("to") or numbers[0])
        old_number = int(request.GET.get("from") or next(n for n in numbers if n < new_number))
    except (ValueError, StopIteration):
        raise Http404("No such revision.") from None
    old = get_revision_for_user(request.user, pk, old_number)
    new = get_revision_for_user(request.user, pk, new_number)
    rows = compare.diff_rows(old.containerfile, new.containerfile)
    added, removed = compare.diff_stats(rows)
    return render(request, "builds/revision_diff.html", {
        "definition": definition, "old": old, "new": new, "rows": rows, "added": added, "removed": removed,
        "numbers": numbers,
    })


@login_required
@require_POST
def revision_build(request, pk, number):
    revision = get_revision_for_user(request.user, pk, number, action=Action.DEVELOP)
    return _start_builds(request, revision)


# --- Builds ----------------------------------------------------------------------------------------------------------


@login_required
def build_list(request):
    teams = Team.objects.visible_to(request.user)
    base = Build.objects.visible_to(request.user).with_related()
    data = request.GET.copy()
    team = current_team(request)
    if "team" not in data and team is not None:
        data["team"] = str(team.pk)
    build_filter = BuildFilter(data, queryset=base, teams=teams)
    builds = build_filter.qs if build_filter.is_valid() else base.none()
    page = Paginator(builds.order_by("-run__created_at", "-id"), 25).get_page(request.GET.get("page"))
    any_active = any(build.is_active for build in page)
    context = {"filter": build_filter, "page": page, "builds": page, "show_definition": True,
               "filtered": any(v for k, v in request.GET.items() if k != "page"),
               "any_active": any_active}
    if request.htmx and request.htmx.target in ("build-rows", "build-list-body"):
        return render(request, "builds/_build_list_body.html", context)
    return render(request, "builds/build_list.html", context)


@login_required
def build_page(request, pk, number):
    """Build `number` of definition `pk`: the URL says the number the page shows."""
    return _build_page(request, get_build_for_user(request.user, definition_pk=pk, number=number))


@login_required
def build_detail(request, pk):
    """A build by its id, where links pointed before builds were named by number: a page redirects (permanently) to
    the numbered URL; the htmx refresh of a page still open at the old URL is answered here."""
    build = get_build_for_user(request.user, pk)
    if request.htmx:
        return _build_page(request, build)
    return redirect(build, permanent=True)


def _build_page(request, build):
    context = _build_context(request, build)
    if request.htmx and request.htmx.target == "build-live":
        # The header and (out of band) the facts, refreshed when the log viewer sees the status or phase move. 286
        # also stops any polling an older page may still do: the build has ended and this is its final state.
        return render(request, "builds/_build_live.html", {**context, "oob": True},
                      status=286 if build.run.is_finished else 200)
    return render(request, "builds/build_detail.html", {**context, **_viewer_context(build.run)})


def _build_context(request, build):
    run = build.run
    previous = (Build.objects.with_related().succeeded().filter(definition=build.definition, platform=build.platform,
                                                                 number__lt=build.number).order_by("-number").first())
    return {
        "build": build, "run": run, "definition": build.definition, "revision": build.revision,
        "can_develop": can(request.user, build.definition.team, Action.DEVELOP),
        "previous": previous,
        "members": _members(build, previous),
        "packages": sorted((build.packages or {}).items()),
        "portal_labels": sorted((k, v) for k, v in (build.labels or {}).items() if k.startswith("io.imagemode.portal.")),
        "other_labels": sorted((k, v) for k, v in (build.labels or {}).items() if not k.startswith("io.imagemode.portal.")),
        **_downstream(build),
    }


def _members(build, previous):
    """A manifest list's members, each with the previous list's member of its platform (what changed, per
    architecture)."""
    if not build.is_manifest_list:
        return []
    before = {m.platform: m for m in multiarch.members_by_architecture(previous)} if previous else {}
    rows = []
    for member in multiarch.members_by_architecture(build):
        earlier = before.get(member.platform)
        delta = member.size - earlier.size if earlier and member.size is not None and earlier.size is not None else None
        rows.append((member, earlier, delta))
    return rows


def _downstream(build):
    """Where a succeeded build's digest went: the stages holding it and its promotions, its disk images and the hosts
    running it, and its supply chain (signatures, SBOM, vulnerabilities), each a fragment that the releases, disk
    images, hosts and supply chain apps serve ("build.stages", "disk_images.of_digest", "build.hosts",
    "build.supply_chain") and the page loads."""
    if not build.digest:
        return {"downstream": False}
    return {
        "downstream": True,
        "stages_url": registry.fragment_url("build.stages", build.pk),
        "disk_images_url": registry.fragment_url("disk_images.of_digest", build.digest),
        "hosts_url": registry.fragment_url("build.hosts", build.pk),
        "supply_chain_url": registry.fragment_url("build.supply_chain", build.pk),
    }


def _two_numbers(request):
    try:
        return int(request.GET.get("a", "")), int(request.GET.get("b", ""))
    except ValueError:
        raise Http404("Pick two builds to compare.") from None


@login_required
def definition_compare(request, pk):
    """What changed between two builds of a definition: ?a=<older build number>&b=<newer build number>."""
    definition = get_definition_for_user(request.user, pk)
    a, b = _two_numbers(request)
    old = get_build_for_user(request.user, definition_pk=definition.pk, number=a)
    new = get_build_for_user(request.user, definition_pk=definition.pk, number=b)
    return _compare_page(request, old, new)


@login_required
def build_compare(request):
    """What changed between two builds by id (?a=<id>&b=<id>): builds of one definition redirect to the comparison by
    numbers; builds of two definitions are compared here."""
    a, b = _two_numbers(request)
    old = get_build_for_user(request.user, a)
    new = get_build_for_user(request.user, b)
    if old.definition_id == new.definition_id:
        return redirect(reverse("builds:definition_compare", args=[old.definition_id])
                        + f"?a={old.number}&b={new.number}", permanent=True)
    return _compare_page(request, old, new)


def _compare_page(request, old, new):
    if old.is_manifest_list and new.is_manifest_list:
        return render(request, "builds/build_compare_lists.html", {
            "old": old, "new": new, "architectures": compare.compare_lists(
                multiarch.members_by_architecture(old), multiarch.members_by_architecture(new))})
    comparison = compare.compare_builds(old, new)
    added, removed = compare.diff_stats(comparison.containerfile_rows)
    # The portal's own labels (build id, revision, source) differ between any two builds: shown apart, folded.
    portal_labels = [row for row in comparison.labels if row[0].startswith(LABEL_PREFIX)]
    return render(request, "builds/build_compare.html", {
        "c": comparison, "old": old, "new": new, "added": added, "removed": removed,
        "image_labels": [row for row in comparison.labels if not row[0].startswith(LABEL_PREFIX)],
        "portal_labels": portal_labels, "portal_labels_changed": sum(row[3] != "same" for row in portal_labels),
    })


# --- Builders --------------------------------------------------------------------------------------------------------


@login_required
def builder_list(request):
    builders = list(Builder.objects.all())
    served_by = queues.serving(builders)
    rows = [(builder, builder.running_builds().count(), builder.builds.active().filter(run__status="queued").count(),
             queues.worker_queues(builder), None if served_by is None else served_by[builder.pk]) for builder in builders]
    return render(request, "builds/builder_list.html", {"rows": rows, "can_manage": request.user.is_superuser})


@login_required
def builder_edit(request, pk=None):
    if not request.user.is_superuser:
        raise PermissionDenied("Only portal administrators manage builders.")
    builder = get_builder_for_user(request.user, pk, manage=True) if pk is not None else None
    form = BuilderForm(request.POST or None, instance=builder)
    if request.method == "POST" and form.is_valid():
        saved = services.builder_save(form=form, user=request.user, request=request)
        messages.success(request, f"Saved builder {saved}. Check its health to see that podman answers.")
        return redirect("builds:builder_list")
    return render(request, "builds/builder_form.html", {"form": form, "builder": builder},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def builder_check(request, pk):
    builder = get_builder_for_user(request.user, pk, manage=True)
    services.builder_check_health(builder=builder)
    if builder.health_ok:
        messages.success(request, f"{builder} answers: podman {builder.podman_version}.")
    else:
        messages.error(request, f"{builder} is not healthy: {builder.health_detail}")
    return redirect("builds:builder_list")


@login_required
@require_POST
def builder_prune(request, pk):
    """Measure the builder's podman store now, and prune it if it is over its budget."""
    builder = get_builder_for_user(request.user, pk, manage=True)
    hygiene.builder_prune(builder=builder, user=request.user, force=True, request=request)
    messages.info(request, f"{builder}: {builder.storage_note}")
    return redirect("builds:builder_list")


@login_required
@require_POST
def builder_toggle(request, pk):
    builder = get_builder_for_user(request.user, pk, manage=True)
    services.builder_set_enabled(builder=builder, enabled=not builder.enabled, user=request.user, request=request)
    messages.success(request, f"{builder} is {'enabled' if builder.enabled else 'disabled'}.")
    return redirect("builds:builder_list")


# --- Image retention -------------------------------------------------------------------------------------------------


@login_required
def definition_retention(request, pk):
    """The dry run: which images would leave the registry, why each other one stays, and the bytes freed."""
    definition = get_definition_for_user(request.user, pk)
    return _render_retention(request, definition)


def _render_retention(request, definition, *, form=None, status=200):
    try:
        plan, refusal = retention.plan(definition), ""
    except retention.KeeperFailed as exc:
        plan, refusal = None, str(exc)
    can_admin = can(request.user, definition.team, Action.ADMIN)
    policy = plan.policy if plan else retention.policy_for(definition)
    if form is None and can_admin:
        form = ImageRetentionPolicyForm(policy=policy)
    cleanups = definition.cleanups.select_related("run")[:10]
    return render(request, "builds/definition_retention.html", {
        "definition": definition, "plan": plan, "policy": policy, "refusal": refusal, "form": form,
        "can_admin": can_admin,
        "cleanups": cleanups,
    }, status=status)


@login_required
@require_POST
def definition_retention_policy(request, pk):
    definition = get_definition_for_user(request.user, pk, action=Action.ADMIN)
    form = ImageRetentionPolicyForm(request.POST)
    if form.is_valid():
        try:
            services.image_retention_policy_save(team=definition.team, definition=definition, user=request.user,
                                                 request=request, **form.cleaned_data)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Saved the image retention of {definition}: the dry run below follows it.")
            return redirect("builds:definition_retention", definition.pk)
    return _render_retention(request, definition, form=form, status=400)


@login_required
@require_POST
def definition_retention_apply(request, pk):
    """Delete the images the dry run listed (the digests it showed, bound to the confirmation)."""
    definition = get_definition_for_user(request.user, pk, action=Action.ADMIN)
    expected = request.POST.get("bytes_expected", "")
    expected = int(expected) if expected.isdigit() and len(expected) < 19 else None
    try:
        cleanup = services.image_cleanup_start(definition=definition, user=request.user, request=request,
                                               digests=request.POST.getlist("digest"), bytes_expected=expected)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect("builds:definition_retention", definition.pk)
    messages.success(request, f"Deleting {len(cleanup.requested)} image(s) of {definition}: each is checked once more "
                              "before it goes; the log follows.")
    return redirect("portal:run_detail", cleanup.run_id)


@login_required
@require_POST
def build_pin(request, pk):
    build = get_build_for_user(request.user, pk, action=Action.DEVELOP)
    pinned = request.POST.get("pinned") == "1"
    services.build_set_pinned(build=build, pinned=pinned, user=request.user, request=request)
    messages.success(request, f"Pinned the image of {build}: retention never deletes it." if pinned else
                     f"Unpinned the image of {build}: retention treats it like the others.")
    return redirect(request.POST.get("next") if request.POST.get("next") == reverse(
        "builds:definition_retention", args=[build.definition_id]) else build)
