"""Remote builders over SSH (paramiko) against a real OpenSSH sshd on loopback: a build, a pinned host key that does
not match, an offline builder, and a cancel that kills the remote process tree."""

import time

import pytest

from builds import pipeline, services
from builds.models import Build, Builder, BuildStatus
from builds.runner import BuilderUnavailable, SSHRunner, Watch
from portal.logsink import lines_after
from portal.services import run_request_cancel
from tests.builds.fixtures import BASE_IMAGE, a_long_sleep, processes_running, skopeo_inspect
from tests.helpers import free_port, start_in_thread, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def remote_builder(db, sshd, podman_store):
    from builds.services import local_architecture

    return Builder.objects.create(name="remote-1", kind="ssh", architecture=local_architecture(), host="127.0.0.1",
                                  port=sshd.port, username="root", private_key=sshd.private_key,
                                  host_key=sshd.host_key, podman_root=podman_store.root,
                                  podman_runroot=podman_store.runroot)


@pytest.fixture
def definition(personas, oci_registry, remote_builder, build_settings):
    return services.definition_create(team=personas.team, user=personas.developer, name="remote-os")


def log_text(build):
    return "\n".join(text for _, text in lines_after(build.run))


def test_a_remote_builder_builds_and_pushes_over_ssh(personas, definition, remote_builder):
    revision = services.revision_create(
        definition=definition, user=personas.developer, context_kind="files",
        context_files={"motd": b"remote context\n"},
        containerfile=f"FROM {BASE_IMAGE}\nCOPY motd /etc/motd\nRUN grep -q remote /etc/motd && echo remote-ok\n",
    )
    build = services.build_start(revision=revision, user=personas.developer)
    assert build.builder == remote_builder
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason + "\n" + log_text(build)
    assert "remote-ok" in log_text(build)
    assert skopeo_inspect(f"{build.repository}@{build.digest}")["Digest"] == build.digest


def test_a_health_check_reads_podman_version_over_ssh(remote_builder):
    services.builder_check_health(builder=remote_builder)
    assert remote_builder.health_ok, remote_builder.health_detail
    assert remote_builder.podman_version


def test_a_host_key_other_than_the_pinned_one_is_refused(remote_builder):
    remote_builder.host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    with pytest.raises(BuilderUnavailable, match="host key other than the pinned one"):
        SSHRunner(host="127.0.0.1", port=remote_builder.port, username="root", private_key=remote_builder.private_key,
                  host_key=remote_builder.host_key)


def test_an_offline_builder_fails_the_build_fast_with_the_reason(personas, definition, remote_builder):
    Builder.objects.filter(pk=remote_builder.pk).update(port=free_port())
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nRUN true\n")
    build = services.build_start(revision=revision, user=personas.developer)
    started = time.monotonic()
    pipeline.build_execute(build.pk)
    elapsed = time.monotonic() - started
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.status == BuildStatus.FAILED
    assert "remote-1 is unavailable" in build.run.exit_reason and "cannot connect" in build.run.exit_reason
    assert build.hint
    assert elapsed < 10  # no retry loop: it fails at once


@pytest.mark.django_db(transaction=True)
def test_cancel_kills_the_remote_process_tree(personas, definition, remote_builder, in_process_worker):
    from builds.queues import build_queue
    in_process_worker(build_queue(remote_builder))

    seconds = a_long_sleep()
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nRUN sleep {seconds}\n")
    build = services.build_start(revision=revision, user=personas.developer)
    thread = start_in_thread(pipeline.build_execute, build.pk)
    try:
        wait_for(lambda: processes_running("sleep", seconds), timeout=60, what="the remote sleep to start")
        run_request_cancel(run=Build.objects.with_related().get(pk=build.pk).run, user=personas.developer)
        wait_for(lambda: not processes_running("sleep", seconds), timeout=5, interval=0.1,
                 what="the remote process tree to be killed")
    finally:
        thread.join(30)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.status == BuildStatus.CANCELLED


def test_commands_over_ssh_are_argument_lists_that_reach_the_remote_literally(remote_builder):
    tricky = "a b; touch /tmp/should-not-exist-$$ `id` 'q' \"d\""
    with SSHRunner(host="127.0.0.1", port=remote_builder.port, username="root", private_key=remote_builder.private_key,
                   host_key=remote_builder.host_key) as runner:
        result = runner.run(["printf", "%s", tricky], watch=Watch(run=None, sink=None, deadline=None), capture=True)
    assert result.stdout == tricky
