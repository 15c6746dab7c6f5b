"""Boot tests: starting one (from the button, the retry view or a promotion's gate), and the gate's verdict; written
once, as in `builds.diskimages.services`. What the VM does is in `bootrun`, its plan per definition in `bootplans`."""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction

from builds.models import Build
from portal.models import Action, Run, RunKind, RunStatus, User
from portal.registry import GateVerdict
from portal.services import audit, run_create, run_enqueue

from . import tasks
from .models import BootTest, BootTestPlan
from .services import check_role


def boot_test_start(*, build: Build, user: User | None, trigger: str = "button", request=None) -> BootTest:
    """Queue a boot of `build`'s digest in a throwaway VM, with the VM settings of now (copied onto the row).
    `user=None` is the portal itself: a promotion into a stage that wants a boot test starts one this way."""
    team = build.definition.team
    check_role(user, team, Action.DEVELOP)
    if not build.succeeded or not build.digest:
        raise ValidationError(f"{build} has no pushed image ({build.get_status_display().lower()}); only a succeeded "
                              "build can be booted.")
    with transaction.atomic():
        running = BootTest.objects.of_digest(team, build.digest).active().first()
        if running is not None:
            raise ValidationError(f"Boot test #{running.pk} of {build.short_digest} is "
                                  f"{running.run.get_status_display().lower()} already; wait for its verdict.")
        run = run_create(kind=RunKind.BOOT_TEST, started_by=user, trigger=trigger, team=team,
                         title=f"Boot test of {build.definition} build {build.number} @ {build.short_digest}")
        plan = BootTestPlan.objects.filter(definition=build.definition).first() or BootTestPlan()
        boot_test = BootTest.objects.create(
            team=team, definition=build.definition, build=build, digest=build.digest,
            repository=build.repository or build.definition.repository, run=run,
            firmware=settings.BOOT_TEST_FIRMWARE, memory_mb=settings.BOOT_TEST_MEMORY_MB, cpus=settings.BOOT_TEST_CPUS,
            marker=(plan.marker or settings.BOOT_TEST_MARKER)[:200],
            boot_seconds_limit=plan.boot_seconds or settings.BOOT_TEST_BOOT_SECONDS,
            soak_seconds=settings.BOOT_TEST_SOAK_SECONDS if plan.soak_seconds is None else plan.soak_seconds,
            ssh_checks=plan.ssh_checks, test_script=plan.test_script if plan.ssh_checks else "",
        )
        content_type = ContentType.objects.get_for_model(BootTest)
        Run.objects.filter(pk=run.pk).update(content_type=content_type, object_id=str(boot_test.pk))
        run.content_type, run.object_id = content_type, str(boot_test.pk)
        audit(action="boot_test.start", actor=user, team=team, obj=boot_test, request=request,
              summary=f"started a boot test of {build.definition} build {build.number} @ {build.short_digest}",
              detail={"digest": build.digest, "build": build.number, "trigger": trigger})
        queue = settings.BOOT_TEST_QUEUE
        transaction.on_commit(lambda: run_enqueue(
            tasks.boot_test_run, boot_test.pk, run=run, what="the boot test", queue=queue,
            unserved=f"No worker takes boot tests (queue {queue}), so this one would wait forever. Start one on a "
                     f"machine with QEMU (`celery -A portal worker -Q {queue} -c 1`), then run the test again."))
    return boot_test


def boot_test_retry_run(*, run: Run, user: User | None, request=None) -> BootTest:
    """A new boot test of the build this run's boot test booted, for the core's retry view (registered in apps.py);
    the view has checked the user's role. Cancelling is the core's own (`portal.services.run_request_cancel`): a
    queued boot test ends at once, a running one's VM is killed within seconds."""
    boot_test = BootTest.objects.select_related("build__definition__team").filter(run=run).first()
    if boot_test is None:
        raise ValidationError(f"{run} has no boot test to run again.")
    if boot_test.build is None:
        raise ValidationError("The build this boot test booted is gone.")
    return boot_test_start(build=boot_test.build, user=user, request=request)


def boot_test_gate(*, promotion, start: bool) -> GateVerdict | None:
    """What the boot tests say of `promotion`, for releases' gate (registered in `portal.registry`): nothing when its
    stage does not want a boot test (or it is a rollback, to a digest the stage ran before); else the newest boot test
    of exactly its digest decides. With `start`, a promotion that has none starts one."""
    stage = promotion.target_stage
    if not stage.require_boot_test or promotion.is_rollback:
        return None
    name = "Boot test"
    latest = BootTest.objects.of_digest(stage.team, promotion.digest).select_related("run").first()
    if latest is None and start and promotion.build is not None:
        latest = boot_test_start(build=promotion.build, user=None, trigger="promotion")
    if latest is None:
        return GateVerdict(name=name, state=GateVerdict.MISSING,
                           message=f"{stage.name} takes only images that passed a boot test, and "
                                   f"{promotion.short_digest} has none yet.")
    url = latest.get_absolute_url()
    if latest.is_active:
        return GateVerdict(name=name, state=GateVerdict.RUNNING, url=url,
                           message=f"Boot test #{latest.pk} of {promotion.short_digest} is "
                                   f"{latest.run.get_status_display().lower()}.")
    if latest.passed:
        return GateVerdict(name=name, state=GateVerdict.PASSED, url=url,
                           message=f"Boot test #{latest.pk} of {promotion.short_digest} passed: "
                                   f"{latest.run.exit_reason or 'it booted.'}")
    return GateVerdict(name=name, state=GateVerdict.FAILED, url=url, lines=tuple(latest.console_tail[-12:]),
                       message=f"Boot test #{latest.pk} of {promotion.short_digest} "
                               f"{'was cancelled' if latest.run.status == RunStatus.CANCELLED else 'failed'}: "
                               f"{latest.run.exit_reason} {stage.name} takes only images that passed one.")
