"""Manifest lists: one image for several architectures.

A definition with several platforms builds a manifest list (`services.build_start_list`): a build row of its own
(`Build.is_manifest_list`) and one member build per platform, each queued on a builder of that architecture (a remote
builder over SSH, or the workers on that architecture's `builds.<arch>` queue). The list's own run waits, queued, while
its members build.

When the last member ends, `manifest_list_settle` looks at them all, once, under the list's row lock:
- every member succeeded: the list's run is sent to the first member's builder, where `assemble` runs
  `podman manifest create`, one `podman manifest add docker://REPO@DIGEST` per member (the images are already in the
  registry: nothing is rebuilt or pulled), `podman manifest push --all --digestfile` to the list's tags, and then reads
  the pushed list back and checks that each architecture's entry is exactly its member's digest;
- any member failed or was cancelled: the list fails, naming each architecture that failed and why, and keeping what
  the others produced (their images stay pushed, with their digests, sizes and packages on their pages).

The members keep everything a single-platform build has (live log, packages, size, its own digest). The list's digest is
what promotions copy (`skopeo copy --multi-arch=all`) and what stages hold; hosts report their own architecture's
digest, which is the member's.
"""

from __future__ import annotations

import json
import time

from django.db import transaction
from django.utils import timezone

from portal import runs
from portal.models import RunStatus
from portal.services import RunStateError, run_enqueue, run_finish, run_request_cancel, run_set_phase

from . import podman, queues, registry
from .models import Build, BuildPhase, platform_architecture
from .notifications import notify_build_failed
from .runner import BuilderUnavailable, CommandFailed, Watch, runner_for


class AssemblyFailed(runs.Failed):
    """The members were built, but their list could not be assembled or pushed as it should be."""


def members_by_architecture(build: Build) -> list[Build]:
    """The list's members in the order of its platforms."""
    order = {platform: i for i, platform in enumerate(build.platforms)}
    members = list(build.members.with_related())
    return sorted(members, key=lambda m: (order.get(m.platform, len(order)), m.number))


def manifest_list_settle(list_id: int) -> str:
    """Once every member of the manifest list has ended: send its assembly to a worker, or fail it naming what failed.
    Idempotent (called after each member ends, after the list starts, and by beat); returns what it did."""
    with transaction.atomic():
        lst = (Build.objects.select_for_update(of=("self",)).select_related("run", "definition")
               .filter(pk=list_id, is_manifest_list=True).first())
        if lst is None or lst.run.status != RunStatus.QUEUED or lst.builder_id is not None:
            return "nothing to do"
        members = members_by_architecture(lst)
        if not members or any(member.run.is_active for member in members):
            return "waiting for its members"
        failed = [m for m in members if m.run.status != RunStatus.SUCCEEDED or not m.digest]
        if failed:
            kept = [m for m in members if m not in failed]
            reason = "; ".join(f"{m.platform} (build {m.number}) {m.run.status}: {m.run.exit_reason or 'no reason'}"
                               for m in failed)
            reason = f"The manifest list was not assembled: {reason}."
            if kept:
                reason += " Kept what the others produced: " + ", ".join(
                    f"{m.platform} build {m.number} ({m.short_digest})" for m in kept) + "."
            try:
                run_finish(lst.run, status=RunStatus.FAILED, reason=reason[:2000])
            except RunStateError:
                return "ended meanwhile"
            Build.objects.filter(pk=lst.pk).update(
                hint="Retry builds every platform again; the layer cache makes the ones that succeeded quick.",
                error_lines="\n".join(f"{m.platform}: {m.failure_headline or m.run.exit_reason}"[:500] for m in failed))
            notify_build_failed(build=lst)
            return "failed"
        # The builder marks the list as sent, so a second settle (two members ending together) sends nothing.
        builder = members[0].builder
        Build.objects.filter(pk=lst.pk).update(builder=builder)
        queue = queues.build_queue(builder)
        from .tasks import build_run  # a cycle: builds.tasks runs the pipeline, which settles lists

        run = lst.run
        transaction.on_commit(lambda: run_enqueue(build_run, lst.pk, run=run, what="the manifest list", queue=queue,
                                                  unserved=queues.unserved(builder, queue, "build")))
        return "sent"


def members_cancel(*, run, user) -> int:
    """Someone asked the list's run to stop (`portal.services.RUN_CANCEL_REQUESTED`): its members' builds stop too, as
    their own Cancel buttons would. Returns how many were asked."""
    manifest_list = Build.objects.filter(run=run, is_manifest_list=True).first()
    if manifest_list is None:
        return 0
    asked = 0
    for member in manifest_list.members.select_related("run"):
        if member.run.is_active:
            run_request_cancel(run=member.run, user=user)
            asked += 1
    return asked


def manifest_lists_settle_due() -> dict[int, str]:
    """Beat: settle lists whose members ended without settling them (cancelled before a worker took them, reaped)."""
    waiting = Build.objects.filter(is_manifest_list=True, run__status=RunStatus.QUEUED, builder__isnull=True)
    return {pk: manifest_list_settle(pk) for pk in waiting.values_list("pk", flat=True)}


def assemble(build: Build, builder, sink, limit) -> None:
    """The list's run on its builder: create, add each member by digest, push with every image, verify per
    architecture, record the list's digest and facts."""
    if builder is None or not builder.enabled:
        raise BuilderUnavailable("the builder of its first member was removed or disabled; retry to build again")
    members = members_by_architecture(build)
    repository = build.repository or build.definition.repository
    access = registry.access_for(build.definition.team, build.definition.registry)
    watch = Watch(run=build.run, sink=sink, deadline=time.monotonic() + limit.seconds)
    tags = [f"{repository}:{tag}" for tag in build.tag_names()]
    local_name = f"{repository}:manifest-list-{build.pk}"
    sink.write(f"Manifest list {build.number} of {build.definition}: " + ", ".join(
        f"{m.platform} from build {m.number} ({m.digest})" for m in members))
    with runner_for(builder) as runner:
        workdir = runner.mkdtemp()
        try:
            authfile = None
            if access.auth_json():
                authfile = f"{workdir}/auth.json"
                runner.write_file(authfile, access.auth_json(), 0o600)
            run_set_phase(build.run, BuildPhase.PUSHING)
            digestfile = f"{workdir}/digest"
            try:
                runner.run(podman.manifest_create_args(builder, local_name), watch=watch)
                for member in members:
                    runner.run(podman.manifest_add_args(builder, local_name, f"{repository}@{member.digest}",
                                                        authfile=authfile, tls_verify=access.tls_verify), watch=watch)
                for i, tag in enumerate(tags):
                    runner.run(podman.manifest_push_args(builder, local_name, tag, authfile=authfile,
                                                         tls_verify=access.tls_verify,
                                                         digestfile=digestfile if i == 0 else None), watch=watch)
                digest = runner.read_file(digestfile).decode().strip()
                run_set_phase(build.run, BuildPhase.INSPECTING)
                raw = runner.run(registry.inspect_args(f"{repository}@{digest}", tls_verify=access.tls_verify,
                                                       authfile=authfile, raw=True), watch=watch, capture=True)
            except CommandFailed as exc:
                raise AssemblyFailed(f"{exc}: {registry.skopeo_error(exc.output_tail) or 'see the log'}. The "
                                     "members' images stay in the registry.") from exc
            finally:
                _remove_local(runner, builder, local_name, sink)
        finally:
            runner.remove_tree(workdir)
    verify(raw.stdout, digest, members, sink)
    first = members[0]
    Build.objects.filter(pk=build.pk).update(
        digest=digest, pushed_at=timezone.now(), tags=[t.rsplit(":", 1)[1] for t in tags], os=first.os,
        architecture="", size=sum(m.size or 0 for m in members), labels=first.labels)
    sink.write(f"Pushed {repository}@{digest}: the manifest list of " + ", ".join(m.platform for m in members))


def _remove_local(runner, builder, name, sink):
    """The local list is only the means of pushing: removing it leaves the members' images where they are."""
    try:
        runner.run(podman.manifest_remove_args(builder, name), watch=Watch(run=None, sink=sink, deadline=None),
                   echo=False, capture=True)
    except CommandFailed:
        pass


def verify(raw: str, digest: str, members, sink) -> None:
    """The pushed list holds exactly each member's digest under its architecture; AssemblyFailed names what differs."""
    if registry.manifest_digest(raw) != digest:
        raise AssemblyFailed(f"The registry serves {digest} with another digest ({registry.manifest_digest(raw)}).")
    found = registry.platform_digests(json.loads(raw))
    for member in members:
        arch = member.architecture or platform_architecture(member.platform)
        if found.get(arch) != member.digest:
            raise AssemblyFailed(f"The pushed list holds {found.get(arch) or 'nothing'} for {arch}, not build "
                                 f"{member.number}'s {member.digest}.")
        sink.write(f"Verified {member.platform}: {member.digest} (build {member.number})")
    extra = sorted(set(found) - {m.architecture or platform_architecture(m.platform) for m in members})
    if extra:
        raise AssemblyFailed(f"The pushed list also holds {', '.join(extra)}, which no member built.")
