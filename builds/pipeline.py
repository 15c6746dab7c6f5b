"""What a worker does with one build: prepare the context, podman build, push by digest, inspect, read the packages.

`build_execute(build_id)` is the whole of the `builds.tasks.build_run` task. It starts the build's run with a conditional
UPDATE (so a redelivered task does nothing), streams every command's output into the run's log, and always ends the run
(succeeded, failed with the step, error lines and a hint, or cancelled), never leaving it running.
"""

from __future__ import annotations

import logging
import time
from pathlib import PurePosixPath

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal import egress, failures, runs
from portal.models import Run, RunStatus
from portal.packages import parse_packages
from portal.registry import announce
from portal.services import run_set_phase

from . import buildcontext, fetches, git, multiarch, podman, registry
from .containerfile import DIRECTIVE_RE
from .git import git_credential_host
from .models import (
    LABEL_BUILD_ID,
    LABEL_BUILD_NUMBER,
    LABEL_DEFINITION,
    LABEL_REVISION,
    LABEL_REVISION_SHA,
    LABEL_SOURCE,
    Build,
    Builder,
    BuildPhase,
    ContextKind,
    GitCredential,
)
from .notifications import BuildEvent, notify_build
from .runner import BuilderUnavailable, CommandFailed, Watch, display, runner_for

log = logging.getLogger(__name__)



class Refused(Exception):
    """The build must not run: something it would fetch or read is not allowed. The message says what, and why."""


class StepTrackingSink:
    """The run's LogSink, remembering podman's last `STEP n/m` line (it may be far above the failing output)."""

    def __init__(self, sink):
        self.sink = sink
        self.last_step = ""
        self.warnings = []  # non-fatal findings (bootc container lint without --fatal-warnings), for the build page
        self.warning_rule = None

    def write(self, text):
        for line in text.split("\n"):
            if podman.STEP_RE.match(line):
                self.last_step = line
            elif len(self.warnings) < 20 and line.strip():
                rule = failures.warning_rule_for(line)
                if rule is not None:
                    self.warnings.append(line[:500])
                    self.warning_rule = self.warning_rule or rule
        self.sink.write(text)

    def poll(self):
        self.sink.poll()


def portal_labels(build: Build) -> dict[str, str]:
    revision = build.revision
    source = f"{settings.SITE_URL.rstrip('/')}{revision.get_absolute_url()}"
    labels = {
        LABEL_BUILD_ID: str(build.pk),
        LABEL_BUILD_NUMBER: str(build.number),
        LABEL_DEFINITION: f"{build.definition.team.slug}/{build.definition.name}",
        LABEL_REVISION: str(revision.number),
        LABEL_REVISION_SHA: revision.sha256,
        LABEL_SOURCE: source,
        "org.opencontainers.image.source": revision.git_url if revision.context_kind == ContextKind.GIT else source,
        "org.opencontainers.image.revision": build.source_commit or revision.sha256,
    }
    if build.definition.description:
        labels["org.opencontainers.image.description"] = build.definition.description.splitlines()[0][:200]
    return labels


def _label_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", " ") + '"'


def containerfile_for_build(text: str, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(the Containerfile the builder gets, labels still to pass as --label).

    podman 4 turns every --label into a step of its own, committed as a layer (about 40 ms each); the portal's labels
    are appended to the final stage as one LABEL instruction instead, which gives the same image. Files with a
    different escape character, or ending in a dangling continuation, keep --label.
    """
    lines = text.rstrip("\n").split("\n")
    directives = {}
    for line in lines:
        match = DIRECTIVE_RE.match(line)
        if not match:
            break
        directives[match.group(1).lower()] = match.group(2)
    last = next((line for line in reversed(lines) if line.strip()), "")
    if directives.get("escape", "\\") != "\\" or last.rstrip().endswith("\\"):
        return text, labels
    label_line = "LABEL " + " ".join(f"{key}={_label_value(value)}" for key, value in labels.items())
    return text.rstrip("\n") + "\n\n# Added by the portal: the labels that tie this image to its build.\n" + label_line + "\n", {}


def time_limit(definition) -> runs.Limit:
    """The definition's own limit, or the portal's ceiling (BUILD_TIME_LIMIT_MAX_SECONDS) when that is shorter."""
    own = definition.timeout_minutes * 60
    if settings.BUILD_TIME_LIMIT_MAX_SECONDS < own:
        return runs.Limit(settings.BUILD_TIME_LIMIT_MAX_SECONDS, "BUILD_TIME_LIMIT_MAX_SECONDS, the portal's ceiling")
    return runs.Limit(own, "the definition's limit")


def build_execute(build_id: int) -> None:
    """Run one build. Its builder's capacity is the concurrency of the workers that consume its queue
    (`builds.queues`): a worker process that takes the task runs it now."""
    build = Build.objects.with_related().filter(pk=build_id).first()
    if build is None or build.run.status != RunStatus.QUEUED:
        return  # gone, or already started/ended (a redelivered task)
    run = build.run
    builder = Builder.objects.filter(pk=build.builder_id).first()
    with transaction.atomic():
        if not runs.claim(run, phase=BuildPhase.PREPARING):
            return
        notify_build(event=BuildEvent.BUILD_STARTED, build=build)
    limit = time_limit(build.definition)
    with runs.executing(run, what="the build pipeline", limit=limit,
                        stopped="its processes were stopped",
                        unavailable=f"Builder {build.builder.name if build.builder else '(none)'} is unavailable",
                        before_finish=lambda execution: _record_failure(build, execution),
                        after_finish=lambda execution: _notify(build, execution)) as execution:
        if build.is_manifest_list:
            multiarch.assemble(build, builder, execution.sink, limit)
        else:
            _build(build, builder, execution.sink, limit)


def _build(build, builder, sink, limit):
    run = build.run
    tracker = StepTrackingSink(sink)
    if builder is None or not builder.enabled:
        raise BuilderUnavailable("its builder was removed or disabled; retry to pick another one")
    watch = Watch(run=run, sink=tracker, deadline=time.monotonic() + limit.seconds)
    revision = build.revision
    sink.write(f"Build {build.number} of {build.definition}, revision {revision.number} ({revision.short_sha}), "
               f"for {build.platform} on builder {builder.name}")
    try:
        _check_egress(build)
    except (Refused, buildcontext.ContextRefused) as exc:
        raise runs.Failed(f"Refused before podman started: {exc}") from exc
    with runner_for(builder) as runner:
        workdir = runner.mkdtemp()
        try:
            _steps(build, builder, runner, workdir, watch, sink, tracker)
        except (Refused, buildcontext.ContextRefused) as exc:
            raise runs.Failed(f"Refused before podman started: {exc}") from exc
        except CommandFailed as exc:
            raise _command_failure(run, tracker, exc) from exc
        finally:
            runner.remove_tree(workdir)


def _steps(build, builder, runner, workdir, watch, sink, tracker):
    run, revision = build.run, build.revision
    context = _prepare_context(build, runner, workdir, watch)
    # After the checkout: the labels name the git commit that was built.
    text, extra_labels = containerfile_for_build(revision.containerfile, portal_labels(build))
    containerfile = f"{workdir}/Containerfile"
    runner.write_file(containerfile, text.encode())

    run_set_phase(run, BuildPhase.BUILDING)
    repository = build.repository or build.definition.repository
    tags = [f"{repository}:{tag}" for tag in build.tag_names()]
    iidfile = f"{workdir}/image-id"
    runner.run(podman.build_args(builder, containerfile=containerfile, context=context, tags=tags,
                                 labels=extra_labels, build_args=build.build_args, platform=build.platform,
                                 iidfile=iidfile, pull=settings.BUILD_PULL_POLICY), watch=watch)
    build.image_id = runner.read_file(iidfile).decode().strip()
    Build.objects.filter(pk=build.pk).update(image_id=build.image_id, tags=[t.rsplit(":", 1)[1] for t in tags])
    if tracker.warnings:
        # The build went on: its warnings are shown as warnings (the failure fields are empty on a success).
        rule = tracker.warning_rule
        Build.objects.filter(pk=build.pk).update(
            hint=f"{rule.title}: {rule.explanation} {rule.fix}"[:500], error_lines="\n".join(tracker.warnings))

    run_set_phase(run, BuildPhase.PUSHING)
    access = registry.access_for(build.definition.team, build.definition.registry)
    authfile = None
    if access.auth_json():
        authfile = f"{workdir}/auth.json"
        runner.write_file(authfile, access.auth_json(), 0o600)
    digestfile = f"{workdir}/digest"
    first, *others = tags
    runner.run(podman.push_args(builder, image=first, destination=first, digestfile=digestfile, authfile=authfile,
                                tls_verify=access.tls_verify), watch=watch)
    digest = runner.read_file(digestfile).decode().strip()
    for tag in others:
        # The other tags name the manifest just pushed, copied in the registry: a second podman push would upload
        # nothing new (every blob is there) and could push whatever the local tag points at by then.
        runner.run(registry.copy_by_digest_args(f"{repository}@{digest}", tag, tls_verify=access.tls_verify,
                                                authfile=authfile), watch=watch)
    Build.objects.filter(pk=build.pk).update(digest=digest, pushed_at=timezone.now())
    sink.write(f"Pushed {repository}@{digest}")

    run_set_phase(run, BuildPhase.INSPECTING)
    inspected = runner.run(registry.inspect_args(f"{repository}@{digest}", tls_verify=access.tls_verify,
                                                 authfile=authfile), watch=watch, capture=True)
    raw = runner.run(registry.inspect_args(f"{repository}@{digest}", tls_verify=access.tls_verify,
                                           authfile=authfile, raw=True), watch=watch, capture=True)
    facts = registry.parse_inspect(inspected.stdout, raw.stdout)
    package_format, packages = _read_packages(builder, runner, build.image_id, watch)
    Build.objects.filter(pk=build.pk).update(
        labels=facts.labels, architecture=facts.architecture, os=facts.os, size=facts.size,
        package_format=package_format, packages=packages,
    )
    sink.write(f"{facts.os}/{facts.architecture}, {facts.layers} layer(s), {facts.size or 0:,} bytes compressed; "
               f"{len(packages)} {package_format or 'no'} package(s)")


class BuildFailed(runs.Failed):
    """A build command failed: the reason, and the summary (step, error lines, hint) the build page shows."""

    def __init__(self, reason, summary):
        super().__init__(reason)
        self.summary = summary


def _command_failure(run, tracker, exc):
    phase = Run.objects.filter(pk=run.pk).values_list("phase", flat=True).first() or ""
    pushing = phase == BuildPhase.PUSHING
    summary = podman.summarize_failure([tracker.last_step, *exc.output_tail] if tracker.last_step and not pushing
                                       else exc.output_tail, pushing=pushing)
    what = {"preparing": "Preparing the build context", "building": "podman build", "pushing": "The push",
            "inspecting": "Inspecting the pushed image"}.get(phase, "A step")
    reason = f"{what} failed ({exc})" + (f" at {summary.step}" if summary.step else "") + "."
    if pushing:
        reason += " The image stays on the builder, so a retry can push it."
    return BuildFailed(reason, summary)


def _record_failure(build, execution):
    """The failed step, error lines and hint the build page shows."""
    if isinstance(execution.error, BuildFailed):
        summary = execution.error.summary
    elif isinstance(execution.error, BuilderUnavailable):
        summary = podman.FailureSummary(hint="Check the builder on the builders page (its health comes from "
                                             "`podman version`), or disable it so builds go to another one.")
    else:
        return
    Build.objects.filter(pk=build.pk).update(failed_step=summary.step[:500], error_lines=summary.error_lines,
                                              hint=summary.hint[:500])


# Announced (portal.registry) once a build succeeded and its run ended, with build_id (the supply chain signs it).
BUILD_SUCCEEDED = "build.succeeded"


def _notify(build, execution):
    if build.manifest_list_id:
        list_id = build.manifest_list_id
        transaction.on_commit(lambda: multiarch.manifest_list_settle(list_id))
    if execution.status == RunStatus.FAILED:
        notify_build(event=BuildEvent.BUILD_FAILED, build=build)
    elif execution.status == RunStatus.SUCCEEDED:
        notify_build(event=BuildEvent.BUILD_SUCCEEDED, build=build)
        build_id = build.pk
        transaction.on_commit(lambda: announce(BUILD_SUCCEEDED, build_id=build_id))


def _check_egress(build):
    """The egress policy over everything the build will fetch, just before it runs (it was checked on save too, but
    names may resolve elsewhere now, and the allow-list may have changed)."""
    revision = build.revision
    team = build.definition.team
    problems = [fetches.repository_refusal(build.repository or build.definition.repository, team)]
    problems += fetches.containerfile_refusals(revision.containerfile, build.build_args, team=team)
    if revision.context_kind == ContextKind.GIT:
        problems.append(fetches.git_refusal(revision.git_url))
    problems = [problem for problem in problems if problem]
    if problems:
        raise Refused(" ".join(problems))


def _prepare_context(build, runner, workdir, watch):
    """Write the build context (portal files, or a git checkout) and confine it (`buildcontext`); returns the directory
    podman may be given."""
    revision = build.revision
    context = f"{workdir}/context"
    subdir = ""
    if revision.context_kind == ContextKind.GIT:
        login = f"{workdir}/git-login"
        env = git.environment(_write_git_login(build, runner, login))
        try:
            runner.run(git.init_args(context), watch=watch, env=env)
            try:
                checked = egress.check_url(revision.git_url, what="The repository URL")
            except egress.EgressRefused as exc:
                raise Refused(str(exc)) from None
            pins = git.curl_resolve(revision.git_url, checked.addresses)
            runner.run(git.fetch_args(context, revision.git_url, revision.git_ref, pins=pins), watch=watch, env=env)
        finally:
            runner.remove_tree(login)
        runner.run(git.checkout_args(context), watch=watch, env=env)
        commit = runner.run(git.head_args(context), watch=watch, env=env, capture=True).stdout.strip()
        build.source_commit = commit
        Build.objects.filter(pk=build.pk).update(source_commit=commit)
        watch.log(f"Checked out {revision.git_url} {revision.git_ref or 'HEAD'} at {commit}")
        subdir = str(PurePosixPath(revision.git_subdir)) if revision.git_subdir else ""
    else:
        runner.mkdir(context)
        for item in revision.context_files.all():
            runner.write_file(f"{context}/{item.path}", bytes(item.content), item.mode)
        count = revision.context_files.count()
        if count:
            watch.log(f"Wrote {count} context file(s)")
    return buildcontext.confine(runner, checkout=context, subdir=subdir, listing=f"{workdir}/context-listing",
                                watch=watch)


def _write_git_login(build, runner, directory) -> str:
    """The team's git login for the revision's host, as files for git's askpass script (0600, outside the context,
    removed right after the fetch); returns the GIT_ASKPASS program ("true": no login)."""
    host = git_credential_host(build.revision.git_url)
    credential = GitCredential.objects.filter(team=build.definition.team, host=host).first() if host else None
    if credential is None:
        return "true"
    runner.write_file(f"{directory}/{git.USERNAME_NAME}", credential.username.encode(), 0o600)
    runner.write_file(f"{directory}/{git.TOKEN_NAME}", credential.token.encode(), 0o600)
    runner.write_file(f"{directory}/{git.ASKPASS_NAME}", git.ASKPASS_SCRIPT.encode(), 0o700)
    return f"{directory}/{git.ASKPASS_NAME}"


def _read_packages(builder, runner, image_id, watch):
    try:
        args = podman.packages_args(builder, image_id)
        result = runner.run(args, watch=watch, capture=True,
                            shown=display(args[:-1]) + " '<list the rpm, dpkg or apk database>'")
    except CommandFailed as exc:
        watch.log(f"Could not read the package list ({exc}); the build still counts.")
        return "", {}
    return parse_packages(result.stdout)
