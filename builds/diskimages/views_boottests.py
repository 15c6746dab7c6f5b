"""Pages for boot tests: a team's list, one boot test with its live console, starting one from a build. Cancel and Run
again are the core's run views (`portal:run_cancel`, and `portal:run_retry` through `services_boottests.boot_test_retry_run`).

Every object comes through `builds.diskimages.access` (or `builds.access` for the build it boots); every change through
`builds.diskimages.services_boottests`.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from builds.access import get_build_for_user, get_definition_for_user
from builds.models import Build
from portal.access import can
from portal.models import Action
from portal.views import _viewer_context, error_text

from . import bootplans, services_boottests
from .access import get_boot_test_for_user
from .forms import BootTestPlanForm
from .models import BootTest

PAGE_SIZE = 25
DIGEST_SHOWN = 5
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


@login_required
def boot_test_list(request):
    tests = BootTest.objects.visible_to(request.user).with_related()
    status = request.GET.get("status", "")
    if status in STATUSES:
        tests = tests.filter(run__status=status)
    page = Paginator(tests, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "diskimages/boottest_list.html", {"page": page, "status": status, "statuses": STATUSES})


def _detail_context(request, boot_test):
    return {"bt": boot_test, "run": boot_test.run, "can_develop": can(request.user, boot_test.team, Action.DEVELOP),
            "checks": _rounds(boot_test.checks)}


def _rounds(checks):
    """[(round, [check, ...]), ...] of a boot test's checks over SSH, for the page."""
    rounds: dict[int, list] = {}
    for check in checks or []:
        rounds.setdefault(check.get("round", 1), []).append(check)
    return sorted(rounds.items())


@login_required
def boot_test_detail(request, pk):
    boot_test = get_boot_test_for_user(request.user, pk)
    context = _detail_context(request, boot_test)
    if request.htmx and request.htmx.target == "boottest-live":
        return render(request, "diskimages/_boottest_live.html", context,
                      status=286 if boot_test.run.is_finished else 200)
    context.update(_viewer_context(boot_test.run))
    return render(request, "diskimages/boottest_detail.html", context)


@login_required
def boot_test_plan(request, definition_pk):
    """A definition's boot-test plan: viewers read it, developers change it."""
    definition = get_definition_for_user(request.user, definition_pk)
    may_change = can(request.user, definition.team, Action.DEVELOP)
    plan = bootplans.plan_for(definition)
    form = BootTestPlanForm(initial={name: getattr(plan, name) for name in bootplans.FIELDS})
    if request.method == "POST":
        definition = get_definition_for_user(request.user, definition_pk, action=Action.DEVELOP)
        form = BootTestPlanForm(request.POST)
        if form.is_valid():
            try:
                bootplans.boot_test_plan_save(definition=definition, user=request.user, request=request,
                                              **form.cleaned_data)
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(request, f"The boot-test plan of {definition.name} is saved; it counts from the next "
                                          "boot test on.")
                return redirect("diskimages:boot_test_plan", definition_pk=definition.pk)
    recent = (BootTest.objects.filter(definition=definition).select_related("run").order_by("-pk")[:DIGEST_SHOWN])
    return render(request, "diskimages/boottest_plan.html", {
        "definition": definition, "plan": plan, "form": form, "may_change": may_change, "recent": recent,
        "defaults": _defaults()})


def _defaults():
    return {"marker": settings.BOOT_TEST_MARKER, "boot_seconds": settings.BOOT_TEST_BOOT_SECONDS,
            "soak_seconds": settings.BOOT_TEST_SOAK_SECONDS, "check_seconds": settings.BOOT_TEST_CHECK_SECONDS}


@login_required
@require_POST
def boot_test_create(request):
    build_id = request.POST.get("build", "")
    if not build_id.isdigit():
        messages.error(request, "Pick the build to boot.")
        return redirect("diskimages:boot_test_list")
    build = get_build_for_user(request.user, int(build_id), action=Action.DEVELOP)
    try:
        boot_test = services_boottests.boot_test_start(build=build, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect(build)
    messages.success(request, f"Boot test #{boot_test.pk} is queued: {build.short_digest} boots in a throwaway VM.")
    return redirect(boot_test)


def digest_boot_tests(user, digest):
    """The boot tests of `digest` the user may see (newest first) and the build a developer may boot it from, for the
    disk images fragment of build and promotion pages."""
    found = list(BootTest.objects.visible_to(user).filter(digest=digest).select_related("run")
                 .order_by("-pk")[:DIGEST_SHOWN])
    build = (Build.objects.visible_to(user).succeeded().filter(digest=digest).select_related("definition__team")
             .order_by("-pk").first())
    bootable = build if build is not None and can(user, build.definition.team, Action.DEVELOP) else None
    return {"boot_tests": found, "bootable_build": bootable}
