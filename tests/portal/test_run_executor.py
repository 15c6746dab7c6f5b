"""The run executor (portal.runs): every kind of failure ends the run once, with the same reason whatever the run's
kind, and no run is ever left running."""

from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.utils import timezone

from portal import logsink, runs, services
from portal.models import Run, RunKind, RunStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(personas):
    run = services.run_create(kind=RunKind.BUILD, title="build web-os", team=personas.team,
                              started_by=personas.developer, subject=personas.team)
    assert runs.claim(run, phase="preparing")
    return run


def execute(run, work, **options):
    """Run `work(execution)` through the executor; the run as stored afterwards, and the execution."""
    options.setdefault("what", "the test's work")
    with runs.executing(run, **options) as execution:
        work(execution)
    return Run.objects.get(pk=run.pk), execution


def log_lines(run):
    return [text for _, text in logsink.lines_after(run)]


def raising(exc):
    def work(execution):
        execution.sink.write("working")
        raise exc
    return work


class TestClaiming:
    def test_a_queued_run_is_claimed_once(self, personas):
        run = services.run_create(kind=RunKind.BUILD, title="b", team=personas.team)
        assert runs.claim(run, phase="preparing")
        assert run.status == RunStatus.RUNNING and run.phase == "preparing"
        assert not runs.claim(Run.objects.get(pk=run.pk)), "a redelivered task does nothing"

    def test_a_run_cancelled_before_a_worker_took_it_is_not_claimed(self, personas):
        run = services.run_create(kind=RunKind.BUILD, title="b", team=personas.team)
        services.run_request_cancel(run=run, user=personas.developer)
        assert not runs.claim(Run.objects.get(pk=run.pk))
        assert Run.objects.get(pk=run.pk).status == RunStatus.CANCELLED


class TestEachWayItEnds:
    def test_work_that_finishes_succeeds_with_the_reason_it_set(self, run):
        def work(execution):
            execution.sink.write("done")
            execution.reason = "Now: up to date."

        stored, execution = execute(run, work)
        assert stored.status == RunStatus.SUCCEEDED and stored.exit_reason == "Now: up to date."
        assert execution.finished and log_lines(stored) == ["done"] and stored.log_lines == 1

    def test_a_known_failure_fails_in_its_own_words_and_the_log_ends_with_them(self, run):
        stored, _ = execute(run, raising(runs.Failed("podman build failed (podman exited with status 1).")))
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason == "podman build failed (podman exited with status 1)."
        assert log_lines(stored) == ["working", stored.exit_reason]

    def test_a_cancel_request_cancels_and_names_who_asked(self, run, personas):
        services.run_request_cancel(run=run, user=personas.developer)
        stored, _ = execute(run, raising(runs.Cancelled("cancel requested")), stopped="its processes were stopped")
        assert stored.status == RunStatus.CANCELLED
        assert stored.exit_reason == ("Cancelled by developer; its processes were stopped and the log up to then is "
                                      "kept.")

    def test_a_time_limit_names_the_limit_and_where_it_is_set(self, run):
        stored, _ = execute(run, raising(runs.TimedOut("past the limit")), limit=runs.Limit(60, "the definition's "
                                                                                                  "limit"),
                            stopped="its processes were stopped")
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason == "Timed out after 1 min (the definition's limit); its processes were stopped."

    def test_celerys_soft_time_limit_is_a_time_limit_too(self, run, settings):
        stored, _ = execute(run, raising(SoftTimeLimitExceeded()))
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason.startswith(f"Timed out after {runs.limit_text(settings.CELERY_TASK_SOFT_TIME_LIMIT)}"
                                             " (the workers' CELERY_TASK_TIME_LIMIT")

    def test_a_missing_tool_says_what_cannot_be_used(self, run):
        stored, _ = execute(run, raising(runs.ToolMissing("skopeo is not installed on this builder")),
                            unavailable="This worker cannot run skopeo")
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason == "This worker cannot run skopeo: skopeo is not installed on this builder."

    def test_a_run_reaped_under_its_worker_keeps_the_reapers_reason(self, run):
        def work(execution):
            Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(days=1))
            services.reap_stale_runs()
            services.run_set_phase(run, "pushing")  # the worker notices: the run is not running any more

        stored, execution = execute(run, work)
        assert stored.status == RunStatus.FAILED and "stopped responding" in stored.exit_reason
        assert not execution.finished
        assert execution.reason.startswith("The run ended while it was working")

    def test_an_unexpected_error_is_an_internal_error_with_its_traceback_in_the_log(self, run):
        stored, _ = execute(run, raising(KeyError("digest")), what="the build pipeline")
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason == "Internal error in the build pipeline: KeyError: 'digest'"
        text = "\n".join(log_lines(stored))
        assert "Traceback (most recent call last)" in text and text.endswith(stored.exit_reason)

    def test_a_worker_shutting_down_ends_the_run_then_shuts_down(self, run):
        with pytest.raises(SystemExit):
            execute(run, raising(SystemExit(1)))
        stored = Run.objects.get(pk=run.pk)
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason == "The worker stopped while it was working (SystemExit)."

    @pytest.mark.parametrize("exc", [
        runs.Failed("x"), runs.Cancelled("x"), runs.TimedOut("x"), runs.ToolMissing("x"), runs.Ended("x"),
        services.RunStateError("x"), SoftTimeLimitExceeded(), RuntimeError("x"), OSError(28, "No space left"),
    ], ids=lambda exc: type(exc).__name__)
    def test_no_run_is_left_running(self, run, exc):
        stored, _ = execute(run, raising(exc))
        assert stored.status != RunStatus.RUNNING and stored.finished_at is not None


class TestWhatFeaturesAdd:
    def test_before_finish_sees_how_the_run_ends_before_it_is_ended(self, run):
        seen = []

        def before(execution):
            seen.append((execution.status, execution.reason, Run.objects.get(pk=run.pk).status))

        execute(run, raising(runs.Failed("no")), before_finish=before)
        assert seen == [(RunStatus.FAILED, "no", RunStatus.RUNNING)]

    def test_after_finish_runs_only_when_this_worker_ended_the_run(self, run, personas):
        told = []
        after = told.append

        execute(run, raising(runs.Failed("no")), after_finish=after)
        assert len(told) == 1

        other = services.run_create(kind=RunKind.BUILD, title="b", team=personas.team)
        runs.claim(other)

        def someone_else_ends_it(execution):
            services.run_finish(Run.objects.get(pk=other.pk), status=RunStatus.FAILED, reason="reaped")
            raise runs.Failed("no")

        execute(other, someone_else_ends_it, after_finish=after)
        assert len(told) == 1

    def test_a_failing_hook_still_ends_the_run(self, run):
        def before(execution):
            raise ValueError("the build row is gone")

        stored, _ = execute(run, lambda execution: None, before_finish=before)
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason == "Internal error while ending the run: ValueError: the build row is gone"

    def test_notes_say_what_was_undone_on_the_way_out(self, run):
        def work(execution):
            execution.note("registry.example/os:prod was put back to sha256:aa.")
            raise runs.Failed("After the copy the tag resolves to nothing.")

        stored, _ = execute(run, work)
        assert stored.exit_reason == ("After the copy the tag resolves to nothing. registry.example/os:prod was put "
                                      "back to sha256:aa.")

    def test_a_success_recorded_in_a_transaction_that_rolls_back_does_not_count(self, run):
        def work(execution):
            with transaction.atomic():
                execution.succeed()
                raise RuntimeError("the history row could not be written")

        stored, _ = execute(run, work)
        assert stored.status == RunStatus.FAILED
        assert stored.exit_reason == ("Internal error in the test's work: RuntimeError: the history row could not be "
                                      "written")

    def test_a_success_recorded_by_the_work_is_the_runs_end(self, run):
        def work(execution):
            execution.sink.write("copied")
            with transaction.atomic():
                execution.succeed()

        stored, execution = execute(run, work)
        assert stored.status == RunStatus.SUCCEEDED and execution.finished and stored.log_lines == 1
