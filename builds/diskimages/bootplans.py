"""A definition's own boot-test plan (`BootTestPlan`): marker, deadline, soak time, and the checks over SSH with the
definition's test script. Written only here; a boot test copies the plan when it is asked for
(`services_boottests.boot_test_start`), so a change counts from the next boot test on."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from builds.models import ImageDefinition
from portal.access import check_team_action
from portal.models import Action, User
from portal.services import audit

from . import bootmarker
from .models import BootTestPlan

FIELDS = ("marker", "boot_seconds", "soak_seconds", "ssh_checks", "test_script")


def plan_for(definition: ImageDefinition) -> BootTestPlan:
    """The definition's plan, or an unsaved one holding the portal's defaults (empty fields)."""
    return BootTestPlan.objects.filter(definition=definition).first() or BootTestPlan(definition=definition)


def boot_test_plan_save(*, definition: ImageDefinition, user: User | None, marker: str = "",
                        boot_seconds: int | None = None, soak_seconds: int | None = None, ssh_checks: bool = False,
                        test_script: str = "", request=None) -> BootTestPlan:
    if user is not None:
        check_team_action(user, definition.team, Action.DEVELOP)
    problem = bootmarker.marker_problem(marker) if marker else ""
    if problem:  # not a regular expression, or one that can take exponential time (bootmarker says why)
        raise ValidationError({"marker": problem})
    if test_script.strip() and not ssh_checks:
        raise ValidationError({"test_script": "The script runs over SSH: turn on the checks over SSH to run it."})
    with transaction.atomic():
        plan, _ = BootTestPlan.objects.select_for_update().get_or_create(definition=definition)
        before = {name: getattr(plan, name) for name in FIELDS}
        plan.marker, plan.boot_seconds, plan.soak_seconds = marker, boot_seconds, soak_seconds
        plan.ssh_checks, plan.test_script, plan.updated_by = ssh_checks, test_script.replace("\r\n", "\n"), user
        plan.full_clean(exclude=["definition"])
        plan.save()
        changed = sorted(name for name in FIELDS if before[name] != getattr(plan, name))
        audit(action="boot_test.plan", actor=user, team=definition.team, obj=definition, request=request,
              summary=f"changed the boot-test plan of {definition}: {', '.join(changed) or 'nothing'}",
              detail={"changed": changed})
    return plan
