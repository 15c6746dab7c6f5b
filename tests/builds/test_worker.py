"""Builds through a real Celery worker on the local architecture's build queue: the whole path from the web form to a
pushed digest, cancelling a `RUN sleep`, and a worker killed with SIGKILL mid-build.

Processes of a build are recognised by a sleep duration no other test uses, so the test can prove they are gone.
"""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.urls import reverse

from builds import services
from builds.models import Build, BuildPhase, BuildStatus
from builds.queues import local_queues
from portal.logsink import lines_after
from portal.models import Run, RunStatus
from portal.models.runs import FINISHED_STATUSES
from portal.services import run_request_cancel
from tests.builds.fixtures import BASE_IMAGE, WORKER_ENV, a_long_sleep, processes_running, skopeo_inspect
from tests.helpers import wait_for
from tests.plugins.processes import end_workers, launch_worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The worker beats its runs' heartbeat every 0.3 s (the killed-worker test reaps after 1 s without one) and looks for a
# cancel request every 0.1 s.
BUILD_WORKER_ENV = {**WORKER_ENV, "RUN_HEARTBEAT_SECONDS": "0.3", "BUILD_CANCEL_POLL_SECONDS": "0.1"}


def local_build_queue():
    return local_queues()[0]


def reload(build):
    return Build.objects.with_related().get(pk=build.pk)


def log_text(build):
    return "\n".join(text for _, text in lines_after(build.run))


class BuildWorkers:
    """One worker process on this machine's build queue, one build at a time, kept from one test of the module to the
    next (starting one costs some 3 s of CPU): what a test leaves it is nothing the next can see, each test's rows being
    new ones. A test that kills it (or leaves a build running in it) gets it replaced for the next test. It writes no
    audit checkpoint (beat's task does), but is handed a file of the module's own for them, never the default's."""

    def __init__(self, redis_url, directory):
        self.redis_url, self.directory, self.started = redis_url, directory, []

    def running(self):
        worker = self.started[-1] if self.started else None
        if worker is None or worker.process.poll() is not None:
            if worker is not None:
                end_workers([worker])  # a killed worker's heartbeat is forgotten before its successor beats
            worker = launch_worker(self.redis_url, self.directory, f"build-worker-{len(self.started)}-{os.getpid()}",
                                   queues=local_build_queue(), concurrency=1,
                                   AUDIT_CHECKPOINT_PATH=str(self.directory / "audit-checkpoints.jsonl"),
                                   **BUILD_WORKER_ENV)
            self.started.append(worker)
        return worker


@pytest.fixture(scope="module")
def build_workers(django_db_setup, redis_server, oci_registry, tmp_path_factory):
    workers = BuildWorkers(redis_server.url, tmp_path_factory.mktemp("build-worker"))
    yield workers
    end_workers(workers.started)


@pytest.fixture
def build_worker(build_workers, transactional_db):
    """The module's build worker, running; killed after a test that left a run unfinished in it (a failed test), so the
    next test does not wait behind that build."""
    worker = build_workers.running()
    yield worker
    if worker.process.poll() is None and Run.objects.exclude(status__in=FINISHED_STATUSES).exists():
        worker.stop(signal.SIGKILL)


@pytest.fixture
def definition(personas, oci_registry, local_builder, build_settings):
    return services.definition_create(team=personas.team, user=personas.developer, name="worker-os")


def test_a_revision_saved_in_the_browser_is_built_by_the_worker_and_pushed(
    build_worker, client_for, personas, definition, oci_registry
):
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]), {
        "containerfile": f"FROM {BASE_IMAGE}\nRUN echo hello > /etc/hello\nLABEL containers.bootc=1\n",
        "message": "hello", "context_kind": "none", "and_build": "1",
    })
    assert response.status_code == 302
    build = Build.objects.get()
    assert response["Location"] == build.get_absolute_url()
    wait_for(lambda: reload(build).run.is_finished, timeout=60, what="the build to end")
    build = reload(build)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason + "\n" + log_text(build)
    inspected = skopeo_inspect(f"{build.repository}@{build.digest}")
    assert inspected["Digest"] == build.digest
    assert inspected["Labels"]["io.imagemode.portal.build-id"] == str(build.pk)
    assert inspected["Labels"]["io.imagemode.portal.revision-sha256"] == build.revision.sha256
    page = client_for(personas.viewer).get(build.get_absolute_url()).content.decode()
    assert build.digest in page and "Succeeded" in page


def test_cancel_stops_a_running_sleep_and_its_whole_process_tree_keeping_the_log(
    build_worker, personas, definition
):
    seconds = a_long_sleep()
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nRUN echo before-sleep\nRUN sleep {seconds}\n")
    build = services.build_start(revision=revision, user=personas.developer)
    wait_for(lambda: processes_running("sleep", seconds) or reload(build).run.is_finished, timeout=60,
             what="the RUN sleep 300 step to start")
    run = reload(build).run
    assert (run.status, run.phase) == ("running", BuildPhase.BUILDING), (
        f"{run.status} {run.phase!r}: {run.exit_reason}\n{log_text(reload(build))}")

    asked = time.monotonic()
    run_request_cancel(run=reload(build).run, user=personas.developer)
    wait_for(lambda: not processes_running("sleep", seconds), timeout=5, interval=0.1,
             what="the sleep (and its podman) to be killed within 5 s")
    killed_after = time.monotonic() - asked
    wait_for(lambda: reload(build).run.is_finished, timeout=10, what="the run to end")

    build = reload(build)
    assert build.status == BuildStatus.CANCELLED
    assert "Cancelled by developer" in build.run.exit_reason
    log = log_text(build)
    assert "before-sleep" in log and f"RUN sleep {seconds}" in log, "the partial log is kept"
    assert build.run.log_lines >= 3
    print(f"process tree gone {killed_after:.2f} s after the cancel request")


def test_a_worker_killed_mid_build_leaves_a_failed_build_with_the_reason(
    build_worker, personas, definition, settings
):
    # Heartbeats every 0.3 s, so a run whose worker is alive is never 1 s stale; the reaper is asked every 0.1 s.
    settings.RUN_STALE_AFTER = timedelta(seconds=1)
    worker = build_worker
    seconds = a_long_sleep()
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nRUN sleep {seconds}\n")
    build = services.build_start(revision=revision, user=personas.developer)
    try:
        wait_for(lambda: processes_running("sleep", seconds), timeout=60, what="the sleep step to start")
        worker.stop(signal.SIGKILL)
        assert reload(build).run.status == RunStatus.RUNNING

        from portal.services import reap_stale_runs

        def reaped():
            reap_stale_runs()
            return reload(build).run.is_finished

        wait_for(reaped, timeout=15, interval=0.1, what="the reaper to fail the build")
        build = reload(build)
        assert build.status == BuildStatus.FAILED
        assert "stopped responding" in build.run.exit_reason and build.run.worker in build.run.exit_reason
    finally:
        # The container's sleep was orphaned with the worker; it was started by this test, so end it here.
        for pid in processes_running("sleep", seconds):
            os.kill(pid, signal.SIGKILL)
