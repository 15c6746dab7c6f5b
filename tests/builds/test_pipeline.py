"""Real builds, in the test process: podman (runc, its own store), a busybox base, docker-registry on loopback, skopeo.

The pipeline (`builds.pipeline.build_execute`) is what the `build_run` task calls; here it runs in-process so each test
can look at the rows it wrote. tests/builds/test_worker.py runs the same through a real Celery worker.
"""

import re
import subprocess

import pytest

from builds import integrations, pipeline, services
from builds.models import LABEL_BUILD_ID, LABEL_REVISION_SHA, Build, BuildStatus, ContextKind, ImageDefinition
from portal import runs
from portal.logsink import lines_after
from tests.builds.fixtures import BASE_IMAGE, a_long_sleep, processes_running, skopeo_inspect

pytestmark = pytest.mark.slow

SIMPLE = f"""FROM {BASE_IMAGE}
RUN echo built > /etc/portal-test && echo "step output"
LABEL containers.bootc=1
"""


@pytest.fixture
def definition(personas, oci_registry, local_builder, build_settings):
    return services.definition_create(team=personas.team, user=personas.developer, name="web-os",
                                      description="The web tier's OS")


def build_now(revision, user, **kwargs):
    build = services.build_start(revision=revision, user=user, **kwargs)
    assert pipeline.build_execute(build.pk) is None
    return Build.objects.with_related().get(pk=build.pk)


def log_text(build):
    return "\n".join(text for _, text in lines_after(build.run))


def test_a_saved_revision_is_built_pushed_and_its_digest_and_labels_are_in_the_registry(definition, personas,
                                                                                         oci_registry):
    revision = services.revision_create(definition=definition, user=personas.developer, containerfile=SIMPLE,
                                        message="first")
    build = build_now(revision, personas.developer)

    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason + "\n" + log_text(build)
    assert build.digest.startswith("sha256:")
    assert build.repository == f"{oci_registry.address}/platform/web-os"
    inspected = skopeo_inspect(f"{build.repository}@{build.digest}")
    assert inspected["Digest"] == build.digest
    labels = inspected["Labels"]
    assert labels[LABEL_BUILD_ID] == str(build.pk)
    assert labels[LABEL_REVISION_SHA] == revision.sha256
    assert labels["containers.bootc"] == "1"
    # Both tags point at the recorded digest.
    for tag in (f"build-{build.number}", f"rev-{revision.short_sha}"):
        assert skopeo_inspect(f"{build.repository}:{tag}")["Digest"] == build.digest
    # What the portal read back.
    assert build.labels[LABEL_BUILD_ID] == str(build.pk)
    assert build.architecture == "amd64" and build.os == "linux"
    assert build.size and build.size > 100_000
    assert build.image_id
    assert build.base_image == BASE_IMAGE
    log = log_text(build)
    assert re.search(r"STEP 2/\d+: RUN echo built", log) and "step output" in log
    assert f"Pushed {build.repository}@{build.digest}" in log
    assert build.run.log_lines > 5


def test_build_args_with_shell_metacharacters_reach_podman_literally(definition, personas):
    value = "a b; echo pwned > /tmp/x $(id) `id` && 'q' \"dq\" | cat"
    services.definition_update(definition=definition, user=personas.developer, build_args={"GREETING": value})
    revision = services.revision_create(
        definition=definition, user=personas.developer,
        containerfile=f'FROM {BASE_IMAGE}\nARG GREETING\nLABEL greeting="${{GREETING}}"\nRUN printf "%s" "$GREETING" > /g\n',
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    assert build.labels["greeting"] == value


def test_the_package_list_is_read_from_the_image(definition, personas):
    dpkg_status = (
        "Package: alpha\\nStatus: install ok installed\\nVersion: 1.0-1\\n\\n"
        "Package: beta\\nStatus: install ok installed\\nVersion: 2.3\\n\\n"
        "Package: gone\\nStatus: deinstall ok config-files\\nVersion: 0.1\\n"
    )
    revision = services.revision_create(
        definition=definition, user=personas.developer,
        containerfile=f"FROM {BASE_IMAGE}\nRUN mkdir -p /var/lib/dpkg && printf '{dpkg_status}' > /var/lib/dpkg/status\n",
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    assert build.package_format == "dpkg"
    assert build.packages == {"alpha": "1.0-1", "beta": "2.3"}


def test_a_failing_step_is_named_with_its_error_lines(definition, personas):
    revision = services.revision_create(
        definition=definition, user=personas.developer,
        containerfile=f"FROM {BASE_IMAGE}\nRUN echo fine\nRUN echo 'about to fail' && ls /no/such/dir\nRUN echo never\n",
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED
    assert re.fullmatch(r"STEP 3/\d+: RUN echo 'about to fail' && ls /no/such/dir", build.failed_step)
    assert "No such file or directory" in build.error_lines
    assert build.failed_step in build.run.exit_reason
    assert not build.digest


def test_nul_bytes_in_a_failing_step_are_stored_as_replacement_characters(definition, personas):
    revision = services.revision_create(
        definition=definition, user=personas.developer,
        containerfile=f"FROM {BASE_IMAGE}\nRUN printf 'error: bad\\0byte\\n' && printf 'err\\0or\\n' >&2 && exit 3\n",
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED, build.run.exit_reason
    assert "error: bad\ufffdbyte" in build.error_lines and "err\ufffdor" in build.error_lines
    assert "error: bad\ufffdbyte" in log_text(build)
    assert "\x00" not in build.error_lines + build.failed_step + build.run.exit_reason


def test_a_step_printing_a_long_line_without_a_newline_is_logged_cut_and_the_build_goes_on(definition, personas,
                                                                                          settings):
    settings.RUN_LOG_LINE_MAX_CHARS = 64 * 1024
    revision = services.revision_create(
        definition=definition, user=personas.developer,
        containerfile=f"FROM {BASE_IMAGE}\nRUN head -c 50000000 /dev/zero | tr '\\0' a\nRUN echo after\n",
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    lines = [text for _, text in lines_after(build.run)]
    cut = [line for line in lines if line.startswith("aaaa")]
    mark = " [… cut: the line is longer than 65,536 bytes; the rest of it is not kept]"
    assert cut == ["a" * (65536 - len(mark)) + mark]
    assert "after" in lines


def test_nul_bytes_in_the_package_database_are_stored_as_replacement_characters(definition, personas):
    dpkg_status = "Package: al\\0pha\\nStatus: install ok installed\\nVersion: 1.\\0\\n"
    revision = services.revision_create(
        definition=definition, user=personas.developer,
        containerfile=f"FROM {BASE_IMAGE}\nRUN mkdir -p /var/lib/dpkg && printf '{dpkg_status}' > /var/lib/dpkg/status\n",
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    assert build.packages == {"al\ufffdpha": "1.\ufffd"}


def test_a_missing_base_image_fails_with_a_hint(definition, personas):
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile="FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN true\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED
    assert build.hint.startswith("Image not found:")


def test_a_registry_that_refuses_the_push_fails_the_build_and_a_retry_pushes_the_local_image(
    definition, personas, auth_registry, podman_store
):
    services.definition_update(definition=definition, user=personas.developer,
                               repository=f"{auth_registry.address}/platform/web-os")
    # A loopback registry marked insecure (plain HTTP), but no login yet.
    integrations.registry_credential_save(team=personas.team, user=personas.admin, registry=auth_registry.address,
                                      username="", password="", insecure=True)
    revision = services.revision_create(definition=definition, user=personas.developer, containerfile=SIMPLE)
    build = build_now(revision, personas.developer)

    assert build.status == BuildStatus.FAILED
    assert "The push failed" in build.run.exit_reason
    assert "registry refused the push" in build.hint
    assert "unauthorized" in build.error_lines.lower() or "authentication required" in build.error_lines.lower()
    assert podman_store.image_exists(build.image_id), "the image stays on the builder"

    integrations.registry_credential_save(team=personas.team, user=personas.admin, registry=auth_registry.address,
                                      username=auth_registry.user, password=auth_registry.password, insecure=True)
    retry = services.build_retry(build=build, user=personas.developer)
    assert pipeline.build_execute(retry.pk) is None
    retry.refresh_from_db()
    retry.run.refresh_from_db()
    assert retry.status == BuildStatus.SUCCEEDED, retry.run.exit_reason
    assert retry.retry_of == build
    # The rebuild came from the layer cache: the RUN step was not run again.
    assert "Using cache" in log_text(retry)
    creds = f"{auth_registry.user}:{auth_registry.password}"
    assert skopeo_inspect(f"{retry.repository}@{retry.digest}", creds=creds)["Digest"] == retry.digest


def test_context_files_kept_in_the_portal_are_copied_in(definition, personas):
    revision = services.revision_create(
        definition=definition, user=personas.developer, context_kind=ContextKind.FILES,
        context_files={"etc/motd": b"hello from the portal\n", "usr/bin/hello": b"#!/bin/sh\necho hi\n"},
        containerfile=f"FROM {BASE_IMAGE}\nCOPY etc/motd /etc/motd\nRUN grep -q 'from the portal' /etc/motd\n",
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason + log_text(build)


def test_a_git_context_is_cloned_from_a_bare_repository(definition, personas, tmp_path):
    work, bare = tmp_path / "work", tmp_path / "repo.git"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "image").mkdir()
    (work / "image" / "motd").write_text("from git\n")
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "init"], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)

    revision = services.revision_create(
        definition=definition, user=personas.developer, context_kind=ContextKind.GIT, git_url=f"file://{bare}",
        git_ref="main", git_subdir="image",
        containerfile=f"FROM {BASE_IMAGE}\nCOPY motd /etc/motd\nRUN grep -q 'from git' /etc/motd\n",
    )
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason + log_text(build)
    assert build.source_commit == commit
    assert build.labels["org.opencontainers.image.revision"] == commit


def test_no_builder_for_the_platform_fails_at_once_with_the_reason(definition, personas):
    from builds.models import BuildEvent
    from portal.models import NotificationWebhook, WebhookDelivery

    NotificationWebhook.objects.create(team=personas.team, name="ci", url="http://127.0.0.1:9/hook",
                                       events=[BuildEvent.BUILD_FAILED])
    services.definition_update(definition=definition, user=personas.developer, platforms=["linux/s390x"])
    revision = services.revision_create(definition=definition, user=personas.developer, containerfile=SIMPLE)
    build = services.build_start(revision=revision, user=personas.developer)
    build.run.refresh_from_db()
    assert build.status == BuildStatus.FAILED
    assert "No enabled builder for linux/s390x" in build.run.exit_reason
    assert WebhookDelivery.objects.filter(event=BuildEvent.BUILD_FAILED).count() == 1


def test_a_failed_build_tells_the_team_through_its_webhooks(definition, personas):
    from builds.models import BuildEvent
    from portal.models import NotificationWebhook, WebhookDelivery

    NotificationWebhook.objects.create(team=personas.team, name="ci", url="http://127.0.0.1:9/hook",
                                       events=[BuildEvent.BUILD_FAILED])
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nRUN exit 3\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED
    [delivery] = WebhookDelivery.objects.filter(event=BuildEvent.BUILD_FAILED)
    assert delivery.payload["subject"]["id"] == build.pk and delivery.payload["data"]["status"] == "failed"


def test_portal_labels_with_quotes_and_dollars_arrive_exactly(definition, personas):
    description = 'The "edge" OS, costs $5 \\ month'
    services.definition_update(definition=definition, user=personas.developer, description=description)
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nRUN true \\\n  && true\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    assert build.labels["org.opencontainers.image.description"] == description
    assert build.labels[LABEL_REVISION_SHA] == revision.sha256


def test_labels_fall_back_to_flags_for_a_dangling_continuation():
    text, flags = pipeline.containerfile_for_build("FROM x\nRUN true \\\n", {"a": "b"})
    assert flags == {"a": "b"} and text == "FROM x\nRUN true \\\n"
    text, flags = pipeline.containerfile_for_build("# escape=`\nFROM x\n", {"a": "b"})
    assert flags == {"a": "b"}
    text, flags = pipeline.containerfile_for_build("FROM x", {"a": 'q"$'})
    assert flags == {} and text.endswith('LABEL a="q\\"\\$"\n')


def test_a_build_past_its_time_limit_fails_with_the_reason_and_its_processes_stopped(definition, personas, settings):
    """The shortest limit a definition takes is a minute; the portal's ceiling, in seconds, stops this one sooner."""
    settings.BUILD_TIME_LIMIT_MAX_SECONDS = 4
    services.definition_update(definition=definition, user=personas.developer, timeout_minutes=1)
    seconds = a_long_sleep()
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM {BASE_IMAGE}\nRUN echo before && sleep {seconds}\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED
    assert build.run.exit_reason.startswith("Timed out after 4 s (BUILD_TIME_LIMIT_MAX_SECONDS, the portal's ceiling)")
    assert "before" in log_text(build), "the log up to the limit is kept"
    assert 3.5 < (build.run.finished_at - build.run.started_at).total_seconds() < 30
    assert not processes_running("sleep", seconds)


def test_a_build_stops_at_its_definitions_limit_or_the_portals_ceiling_whichever_comes_first(settings):
    definition = ImageDefinition(timeout_minutes=1)
    settings.BUILD_TIME_LIMIT_MAX_SECONDS = 24 * 3600
    limit = pipeline.time_limit(definition)
    assert (limit.seconds, limit.source) == (60, "the definition's limit")
    assert runs.stop_reason(runs.TimedOut(), runs.Execution(run=None, sink=None), what="the build pipeline", limit=limit,
                            unavailable="")[1] == "Timed out after 1 min (the definition's limit)."
    settings.BUILD_TIME_LIMIT_MAX_SECONDS = 30
    assert pipeline.time_limit(definition) == runs.Limit(30, "BUILD_TIME_LIMIT_MAX_SECONDS, the portal's ceiling")


def test_a_build_whose_lint_prints_warnings_succeeds_and_shows_them_as_warnings(definition, personas, client_for):
    # What `bootc container lint` prints without --fatal-warnings (tests/data/failures/lint-nonfatal-playtron217.log):
    # the build goes on and commits.
    containerfile = (f"FROM {BASE_IMAGE}\n"
                     "RUN echo 'Lint warning: var-log: Found non-empty logfile: /var/log/akmods/akmods.log' && "
                     "echo 'Checks passed: 9' && echo 'Warnings: 1'\nLABEL containers.bootc=1\n")
    revision = services.revision_create(definition=definition, user=personas.developer, containerfile=containerfile)
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    assert build.hint.startswith("bootc container lint warnings:")
    assert build.error_lines == "Lint warning: var-log: Found non-empty logfile: /var/log/akmods/akmods.log"
    page = client_for(personas.viewer).get(build.get_absolute_url()).content.decode()
    assert "Succeeded with warnings" in page and "border-warning" in page and "failure-card" not in page
