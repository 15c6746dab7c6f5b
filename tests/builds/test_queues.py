"""Builder capacity through Celery routing (builds/queues.py, docs/workers.md).

- Builds and conversions for local builders wait in `builds.<arch>` / `images.<arch>`; a remote builder's in
  `builder.<id>`, served by `manage.py builder_worker NAME` with the builder's capacity as its concurrency.
- They wait in the broker, first in first out, and a worker's concurrency is the capacity: nothing is counted in the
  database and nothing is retried every few seconds.
- A build or conversion whose queue no live worker consumes fails at once, saying which worker to start.
"""

import signal
import sys

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from builds import services
from builds.diskimages import services as diskimages
from builds.models import Build, Builder
from builds.queues import local_architecture, local_queues
from portal import workers
from portal.models import RunStatus
from tests.builds.fixtures import BASE_IMAGE, WORKER_ENV
from tests.diskimages.rows import succeeded_build
from tests.helpers import free_port, wait_for
from tests.plugins.processes import PortalProcess, subprocess_env

# Tasks are sent when the request's transaction commits; several tests start workers.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

OTHER_ARCH = "arm64" if local_architecture() != "arm64" else "amd64"


def reload(build):
    return Build.objects.with_related().get(pk=build.pk)


def remote_builder(name="remote-arm", *, architecture=OTHER_ARCH, capacity=3):
    """An SSH builder nothing listens for: whatever runs on it fails at its first connection."""
    return Builder.objects.create(name=name, kind="ssh", architecture=architecture, capacity=capacity,
                                  host="127.0.0.1", port=free_port(), username="root", private_key="unused",
                                  host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5vdCBhIHJlYWwga2V5IGF0IGFsbCEhISEh")


def builder_worker(builder, redis_server, tmp_path):
    """`manage.py builder_worker NAME`, as an operator runs it, on the test database and Redis; started, not yet
    serving (serving() waits for its heartbeat)."""
    return PortalProcess(f"builder-{builder.pk}", [sys.executable, "manage.py", "builder_worker", builder.name],
                         subprocess_env(redis_server.url), tmp_path)


def serving(worker, builder):
    wait_for(lambda: workers.consumers(f"builder.{builder.pk}") or worker.process.poll() is not None, timeout=60,
             what="the builder's worker to beat")
    assert worker.process.poll() is None, worker.output()
    return worker


def kill(worker, builder):
    """End a builder's worker as start_worker ends its own: killed (a warm shutdown took 2-4 s on a busy machine, and
    the test is over), its heartbeat forgotten as a clean stop would forget it."""
    worker.stop(signal.SIGKILL)
    for beat in workers.consumers(f"builder.{builder.pk}"):
        workers.forget(name=beat.name)


# --- Nobody serves the queue -----------------------------------------------------------------------------------------


def test_a_build_no_worker_takes_fails_at_once_saying_which_worker_to_start(personas, client_for, local_builder):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="lonely")
    services.revision_create(definition=definition, user=personas.developer, containerfile=f"FROM {BASE_IMAGE}\n")
    response = client_for(personas.developer).post(reverse("builds:definition_build", args=[definition.pk]))
    build = reload(Build.objects.get())
    assert response.status_code == 302
    assert build.run.status == RunStatus.FAILED
    queue = f"builds.{local_architecture()}"
    assert build.run.exit_reason == (
        f"No worker takes builds for {local_architecture()} (queue {queue}), so this one would wait forever. Start one "
        "on a machine of that architecture with podman (`manage.py builder_worker local`), then retry.")
    assert "would wait forever" in client_for(personas.viewer).get(build.get_absolute_url()).content.decode()


def test_a_remote_builder_without_its_worker_fails_the_build_naming_the_command(personas):
    builder = remote_builder(capacity=4)
    definition = services.definition_create(team=personas.team, user=personas.developer, name="arm-os",
                                            platforms=[f"linux/{OTHER_ARCH}"])
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\n")
    build = reload(services.build_start(revision=revision, user=personas.developer))
    assert build.builder == builder and build.run.status == RunStatus.FAILED
    assert f"No worker serves builder remote-arm (queue builder.{builder.pk})" in build.run.exit_reason
    assert "`manage.py builder_worker remote-arm` (its concurrency is the builder's capacity, 4)" in build.run.exit_reason


def test_a_conversion_no_worker_takes_fails_at_once(personas, local_builder):
    build = succeeded_build(personas.team, personas.developer, architecture=local_architecture())
    disk_image = diskimages.disk_image_request(user=personas.developer, build=build, types=["qcow2"])
    disk_image.run.refresh_from_db()
    assert disk_image.run.status == RunStatus.FAILED
    assert f"No worker takes conversions for {local_architecture()} (queue images.{local_architecture()})" in (
        disk_image.run.exit_reason)


# --- Routing and capacity --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_builds_wait_in_the_broker_and_run_first_in_first_out_one_per_worker_process(
        personas, start_worker, local_builder, oci_registry, build_settings):
    start_worker(queues=local_queues()[0], concurrency=1, **WORKER_ENV)
    definition = services.definition_create(team=personas.team, user=personas.developer, name="fifo")
    builds = []
    for i in range(3):
        # The first build runs a second longer, so the test sees it running with the two others queued behind it;
        # that the others never start before the one ahead of them ends is in the times the runs recorded.
        revision = services.revision_create(definition=definition, user=personas.developer,
                                            containerfile=f"FROM {BASE_IMAGE}\nRUN echo {i}{' && sleep 1' * (i == 0)}\n")
        builds.append(services.build_start(revision=revision, user=personas.developer))
    wait_for(lambda: reload(builds[0]).run.status == RunStatus.RUNNING, timeout=60, what="the first build to start")
    assert [reload(b).run.status for b in builds[1:]] == [RunStatus.QUEUED, RunStatus.QUEUED]

    wait_for(lambda: all(reload(b).run.is_finished for b in builds), timeout=180, what="the three builds to end")
    runs = [reload(b).run for b in builds]
    assert [run.status for run in runs] == [RunStatus.SUCCEEDED] * 3, [run.exit_reason for run in runs]
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later.started_at >= earlier.finished_at  # one at a time, in the order they were asked for


@pytest.mark.slow
def test_a_build_for_another_architecture_lands_on_that_architectures_builder_worker(
        personas, start_worker, redis_server, tmp_path):
    arm = remote_builder(capacity=3)
    arm_worker = builder_worker(arm, redis_server, tmp_path)  # imports the portal while the local worker does
    try:
        local_worker = start_worker(concurrency=1)  # make run's queues: this machine's architecture only
        serving(arm_worker, arm)
        [beat] = workers.consumers(f"builder.{arm.pk}")
        assert beat.queues == (f"builder.{arm.pk}",) and beat.concurrency == 3  # the builder's capacity
        definition = services.definition_create(team=personas.team, user=personas.developer, name="arm-os",
                                                platforms=[f"linux/{OTHER_ARCH}"])
        revision = services.revision_create(definition=definition, user=personas.developer,
                                            containerfile=f"FROM {BASE_IMAGE}\n")
        build = services.build_start(revision=revision, user=personas.developer)
        wait_for(lambda: reload(build).run.is_finished, timeout=60, what="the build to end")
        build = reload(build)
        assert build.builder == arm
        assert "Builder remote-arm is unavailable" in build.run.exit_reason  # nothing listens: it ran there
        assert "builds.tasks.build_run[" in arm_worker.output() and "build_run[" not in local_worker.output()
        # While it runs, a second worker for the same builder is refused: it would double the builder's capacity.
        with pytest.raises(CommandError, match=rf"^builder-{arm.pk}@\S+ already serves builder remote-arm; a second "
                                               r"worker would double its capacity \(3\)"):
            call_command("builder_worker", "remote-arm")
    finally:
        kill(arm_worker, arm)


# --- manage.py builder_worker ----------------------------------------------------------------------------------------


def test_builder_worker_refuses_unknown_disabled_and_foreign_builders_in_one_line(personas):
    with pytest.raises(CommandError, match=r"^No builder named 'nope' \(builders: none yet\)\.$"):
        call_command("builder_worker", "nope")
    off = remote_builder("off")
    Builder.objects.filter(pk=off.pk).update(enabled=False)
    with pytest.raises(CommandError, match="^Builder off is disabled: enable it on the builders page first.$"):
        call_command("builder_worker", "off")
    Builder.objects.create(name="elsewhere", kind="local", architecture=OTHER_ARCH)
    with pytest.raises(CommandError, match=f"this machine is {local_architecture()}: start its worker on a {OTHER_ARCH}"):
        call_command("builder_worker", "elsewhere")


def test_builder_worker_runs_celery_on_the_builders_queues_with_its_capacity(personas, capsys):
    arm = remote_builder(capacity=5)
    call_command("builder_worker", "remote-arm", "--print")
    out = capsys.readouterr().out
    assert f"queues builder.{arm.pk}, 5 at once" in out
    assert f"-m celery -A portal worker -Q builder.{arm.pk} --concurrency 5 -n builder-{arm.pk}@%h" in out
    local = Builder.objects.create(name="local", kind="local", architecture=local_architecture(), capacity=2)
    call_command("builder_worker", "local", "--print")
    arch = local_architecture()
    assert f"-Q builds.{arch},images.{arch} --concurrency 2 -n builder-{local.pk}@%h" in capsys.readouterr().out


def test_the_builders_page_shows_each_builders_queues_and_the_workers_serving_them(client_for, personas,
                                                                                  in_process_worker):
    Builder.objects.create(name="local", kind="local", architecture=local_architecture())
    arm = remote_builder()
    page = client_for(personas.viewer).get(reverse("builds:builder_list")).content.decode()
    arch = local_architecture()
    assert f"<code>builds.{arch}</code>, <code>images.{arch}</code>" in page
    assert "in-process-" in page and "(1 at once)" in page  # the live worker on this machine's queues
    assert f"<code>builder.{arm.pk}</code>" in page
    assert "no worker: <code>manage.py builder_worker remote-arm</code>" in page
