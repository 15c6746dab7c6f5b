"""Every state change of image definitions, revisions, builds, builders, schedules and image retention, written once.

Views, the JSON API, the webhook, tasks and management commands call these; each one checks access, writes, audits and
enqueues after commit. What a worker does with a build once it runs is in `builds.pipeline`; a team's integrations
(registry and git logins, API tokens, webhooks) are in `builds.integrations`.
"""

from __future__ import annotations

import hashlib
import re

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max, ProtectedError
from django.utils import timezone

from portal.access import can, check_team_action
from portal.models import Action, Run, RunKind, RunStatus, Team, User
from portal.services import audit, run_create, run_enqueue, run_finish
from portal.text import storable

from . import podman, queues
from .buildcontext import validate_context
from .containerfile_checks import final_base_image, validate_text
from .fetches import containerfile_refusals, git_refusal, repository_refusal
from .git import validate_git_url
from .models import (
    Build,
    Builder,
    BuilderKind,
    ContextFile,
    ContextKind,
    ImageCleanup,
    ImageDefinition,
    ImageRetentionPolicy,
    Revision,
    default_repository,
    platform_architecture,
)
from .multiarch import manifest_list_settle
from .notifications import notify_build_failed
from .podman import supports_heredocs
from .queues import local_architecture  # noqa: F401 - also services' public name for it
from .runner import RunnerError, Watch, runner_for
from .scheduling import schedule_next

# --- Definitions -----------------------------------------------------------------------------------------------------


def _check(user, team, action):
    """Access check for people; user=None is the portal itself (webhook, schedule, API token already checked)."""
    if user is not None:
        check_team_action(user, team, action)


def definition_create(
    *,
    team: Team,
    user: User | None,
    name: str,
    description: str = "",
    repository: str = "",
    platforms: list[str] | None = None,
    build_args: dict[str, str] | None = None,
    schedule: str = "",
    timeout_minutes: int = 60,
    request=None,
) -> ImageDefinition:
    _check(user, team, Action.DEVELOP)
    definition = ImageDefinition(
        team=team,
        name=name,
        description=description,
        repository=repository or default_repository(team, name),
        platforms=platforms or ["linux/amd64"],
        build_args=build_args or {},
        schedule=schedule,
        timeout_minutes=timeout_minutes,
        created_by=user if user is not None and user.is_authenticated else None,
    )
    definition.full_clean()
    _check_repository(definition.repository, definition.team)
    with transaction.atomic():
        definition.save()
        schedule_next(definition)
        audit(action="definition.create", summary=f"created image definition {definition}", actor=user, team=team,
              obj=definition, request=request, detail={"repository": definition.repository})
    return definition


DEFINITION_EDITABLE = ("description", "repository", "platforms", "build_args", "schedule", "timeout_minutes")


def definition_update(*, definition: ImageDefinition, user: User | None, request=None, **changes) -> ImageDefinition:
    _check(user, definition.team, Action.DEVELOP)
    unknown = set(changes) - set(DEFINITION_EDITABLE)
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
    before = {field: getattr(definition, field) for field in changes}
    for field, value in changes.items():
        setattr(definition, field, value)
    definition.full_clean()
    changed = {f: {"from": before[f], "to": v} for f, v in changes.items() if before[f] != v}
    if not changed:
        return definition
    if "repository" in changed:
        _check_repository(definition.repository, definition.team)
    with transaction.atomic():
        definition.save()
        if "schedule" in changed:
            schedule_next(definition)
        audit(action="definition.update", summary=f"changed {', '.join(changed)} of {definition}", actor=user,
              team=definition.team, obj=definition, request=request, detail=changed)
    return definition


def _check_repository(repository, team):
    refusal = repository_refusal(repository, team)
    if refusal:
        raise ValidationError({"repository": refusal})


def definition_delete(*, definition: ImageDefinition, user: User | None, request=None):
    """Delete a definition with its revisions and builds (the images stay in the registry)."""
    _check(user, definition.team, Action.DEVELOP)
    if definition.builds.active().exists():
        raise ValidationError("It has builds queued or running: cancel them first.")
    try:
        with transaction.atomic():
            audit(action="definition.delete", summary=f"deleted image definition {definition}", actor=user,
                  team=definition.team, obj=definition, request=request)
            run_ids = list(definition.builds.values_list("run_id", flat=True))
            definition.builds.all().delete()
            Run.objects.filter(pk__in=run_ids).delete()
            definition.revisions.all().delete()
            definition.delete()
    except ProtectedError as exc:
        kinds = sorted({obj._meta.verbose_name_plural for obj in exc.protected_objects})
        raise ValidationError(f"{definition} cannot be deleted: its builds are referred to by {', '.join(kinds)}, "
                              "whose history must stay.") from None


# --- Revisions -------------------------------------------------------------------------------------------------------


def revision_create(
    *,
    definition: ImageDefinition,
    user: User | None,
    containerfile: str | bytes,
    message: str = "",
    context_kind: str = ContextKind.NONE,
    git_url: str = "",
    git_ref: str = "",
    git_subdir: str = "",
    context_files: dict[str, bytes] | None = None,
    request=None,
) -> Revision:
    """Validate and save a new immutable revision. Raises ValidationError (with every error, keyed "containerfile",
    "git_url" or NON_FIELD_ERRORS) when it must not be saved; the warnings are stored on the revision and shown."""
    _check(user, definition.team, Action.DEVELOP)
    # With the definition's build args, as the build will have them (and as the form's Check button shows it).
    report = validate_text(containerfile, build_args=definition.build_args)
    containerfile_errors = [str(issue) for issue in report.errors]
    if not containerfile_errors:
        containerfile_errors = containerfile_refusals(report.text, definition.build_args, team=definition.team)
    url_errors, context_errors = [], []
    if context_kind == ContextKind.GIT:
        url_errors = [problem for problem in [validate_git_url(git_url)] if problem]
        if not url_errors:
            url_errors = [refusal for refusal in [git_refusal(git_url)] if refusal]
    for error in validate_context(kind=context_kind, git_url=git_url, git_ref=git_ref, git_subdir=git_subdir,
                                  files=context_files or {}):
        if error not in url_errors and error != validate_git_url(git_url):
            context_errors.append(error)
    errors = {"containerfile": containerfile_errors, "git_url": url_errors, NON_FIELD_ERRORS: context_errors}
    if any(errors.values()):
        raise ValidationError({key: value for key, value in errors.items() if value})
    _warn_about_old_podman(report)
    text = report.text
    with transaction.atomic():
        # Lock the definition so two saves never get the same number.
        ImageDefinition.objects.select_for_update().filter(pk=definition.pk).first()
        last = definition.revisions.aggregate(n=Max("number"))["n"] or 0
        revision = Revision(
            definition=definition,
            number=last + 1,
            containerfile=text,
            sha256=Revision.hash_text(text),
            author=user if user is not None and user.is_authenticated else None,
            author_name=user.username if user is not None and user.is_authenticated else "",
            message=message[:500],
            context_kind=context_kind,
            git_url=git_url if context_kind == ContextKind.GIT else "",
            git_ref=git_ref if context_kind == ContextKind.GIT else "",
            git_subdir=git_subdir.strip("/") if context_kind == ContextKind.GIT else "",
            warnings=[issue.as_dict() for issue in report.warnings],
        )
        revision.save()
        if context_kind == ContextKind.FILES:
            for path, content in sorted((context_files or {}).items()):
                ContextFile.objects.create(
                    revision=revision, path=path, content=content, size=len(content),
                    sha256=_sha256(content),
                )
        audit(action="revision.create", summary=f"saved {revision}: {message[:200] or '(no message)'}", actor=user,
              team=definition.team, obj=revision, request=request,
              detail={"sha256": revision.sha256, "warnings": len(report.warnings)})
    return revision


def _warn_about_old_podman(report):
    """Heredocs need podman 4.8 (buildah 1.33); say so at save time when an enabled builder is older."""
    with_heredoc = [i for i in report.parsed.instructions if i.heredocs] if report.parsed else []
    if not with_heredoc:
        return
    old = [b for b in Builder.objects.filter(enabled=True).exclude(podman_version="")
           if not supports_heredocs(b.podman_version)]
    if old:
        names = ", ".join(f"{b.name} (podman {b.podman_version})" for b in old)
        report.add("warning", with_heredoc[0].line, "heredoc-old-podman",
                   f"heredocs (<<{with_heredoc[0].heredocs[0].name}) need podman 4.8 or newer; {names} would fail at "
                   "this step. Write the script as a file in the build context instead, or upgrade the builders.")


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# --- Builders --------------------------------------------------------------------------------------------------------


def builder_ensure_local() -> Builder:
    """The worker's own podman as a builder, created the first time one is needed."""
    builder = Builder.objects.filter(kind=BuilderKind.LOCAL).order_by("pk").first()
    if builder is None:
        builder, _ = Builder.objects.get_or_create(
            name="local", defaults={"kind": BuilderKind.LOCAL, "architecture": local_architecture(), "capacity": 2,
                                    "podman_root": settings.BUILD_PODMAN_ROOT,
                                    "podman_runroot": settings.BUILD_PODMAN_RUNROOT},
        )
    return builder


def builder_pick(platform: str, *, queue_of=queues.build_queue) -> Builder | None:
    """The enabled builder of the platform's architecture to queue work for. Builders whose queue (`queue_of`) a live
    worker consumes come first (when none does, enqueueing fails and says which worker to start); among them, the one
    with the fewest queued and running builds per unit of capacity, so work spreads over same-architecture builders.
    Capacity itself is the workers' concurrency: nothing here holds a build back."""
    if not Builder.objects.exists():
        builder_ensure_local()
    architecture = platform_architecture(platform)
    candidates = list(Builder.objects.filter(enabled=True, architecture=architecture))
    if not candidates:
        return None
    served = queues.served()
    if served is not None:
        candidates = [b for b in candidates if queue_of(b) in served] or candidates
    load = {
        b.pk: Build.objects.filter(builder=b, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).count()
        for b in candidates
    }
    return min(candidates, key=lambda b: (load[b.pk] / max(b.capacity, 1), b.pk))


# --- Builds ----------------------------------------------------------------------------------------------------------


def build_start(
    *,
    revision: Revision,
    user: User | None,
    trigger: str = "button",
    platform: str | None = None,
    retry_of: Build | None = None,
    actor_name: str = "",
    manifest_list: Build | None = None,
    request=None,
) -> Build:
    """Queue a build of `revision` for `platform` (default: the definition's first platform) and enqueue it after commit.
    With `manifest_list`, the build is that list's member for its platform (`build_start_list`).

    `user` None means the portal itself started it (webhook, schedule, an API token: say which in `actor_name`). With no
    enabled builder for the platform, the build is recorded and fails at once, with the reason.
    """
    definition = revision.definition
    _check(user, definition.team, Action.DEVELOP)
    platform = platform or definition.platforms[0]
    if platform not in definition.platforms and retry_of is None:
        raise ValidationError(f"{definition} does not build for {platform}; its platforms are "
                              f"{', '.join(definition.platforms)}.")
    with transaction.atomic():
        ImageDefinition.objects.select_for_update().filter(pk=definition.pk).first()
        number = (definition.builds.aggregate(n=Max("number"))["n"] or 0) + 1
        builder = builder_pick(platform)
        run = run_create(
            kind=RunKind.BUILD,
            title=f"Build {number} of {definition} r{revision.number} ({platform})",
            team=definition.team,
            started_by=user,
            trigger=trigger,
        )
        build = Build.objects.create(
            definition=definition, revision=revision, number=number, run=run, platform=platform, builder=builder,
            retry_of=retry_of, build_args=dict(definition.build_args), repository=definition.repository,
            base_image=final_base_image(revision.containerfile, definition.build_args), manifest_list=manifest_list,
        )
        Run.objects.filter(pk=run.pk).update(content_type=ContentType.objects.get_for_model(Build), object_id=str(build.pk))
        run.content_type_id, run.object_id = ContentType.objects.get_for_model(Build).pk, str(build.pk)
        who = actor_name or (user.username if user is not None else trigger)
        audit(action="build.start", summary=f"started {build} ({platform}, {trigger})", actor=user,
              actor_name=actor_name, team=definition.team, obj=build, request=request,
              detail={"revision": revision.number, "platform": platform, "trigger": trigger, "by": who,
                      "retry_of": retry_of.pk if retry_of else None})
        if builder is None:
            run_finish(run, status="failed", reason=f"No enabled builder for {platform}: add one of architecture "
                                                    f"{platform_architecture(platform)} on the builders page.")
            build.hint = "Add or enable a builder of this architecture."
            build.save(update_fields=["hint"])
            notify_build_failed(build=build)
        else:
            from .tasks import build_run  # a cycle: builds.tasks calls these services

            queue = queues.build_queue(builder)
            transaction.on_commit(lambda: run_enqueue(build_run, build.pk, run=run, what="the build", queue=queue,
                                                      unserved=queues.unserved(builder, queue, "build")))
    return build


def build_start_all(*, revision: Revision, user: User | None, trigger: str = "button", actor_name: str = "",
                    request=None) -> list[Build]:
    """The definition's image: one build for one platform, a manifest list (`build_start_list`) for several."""
    if len(revision.definition.platforms) > 1:
        return [build_start_list(revision=revision, user=user, trigger=trigger, actor_name=actor_name,
                                 request=request)]
    return [build_start(revision=revision, user=user, trigger=trigger, platform=revision.definition.platforms[0],
                        actor_name=actor_name, request=request)]


def build_start_list(*, revision: Revision, user: User | None, trigger: str = "button", actor_name: str = "",
                     retry_of: Build | None = None, request=None) -> Build:
    """Queue a manifest list of `revision` for every platform of its definition: the list's build, and one member build
    per platform on a builder of that architecture (`builds.multiarch` assembles the list once they all succeeded).

    Refused at once, with nothing queued, when a platform has no enabled builder of its architecture: the message names
    the architecture."""
    definition = revision.definition
    _check(user, definition.team, Action.DEVELOP)
    platforms = list(definition.platforms)
    missing = [platform for platform in platforms if builder_pick(platform) is None]
    if missing:
        architectures = ", ".join(platform_architecture(p) for p in missing)
        raise ValidationError(
            f"No enabled builder for {architectures}: {definition} builds for {', '.join(platforms)}, so nothing was "
            f"started. A portal administrator adds (or enables) a builder of architecture {architectures} on the "
            "builders page.")
    with transaction.atomic():
        ImageDefinition.objects.select_for_update().filter(pk=definition.pk).first()
        number = (definition.builds.aggregate(n=Max("number"))["n"] or 0) + 1
        run = run_create(kind=RunKind.BUILD, team=definition.team, started_by=user, trigger=trigger,
                         title=f"Build {number} of {definition} r{revision.number} (manifest list: "
                               f"{', '.join(platforms)})")
        manifest_list = Build.objects.create(
            definition=definition, revision=revision, number=number, run=run, platform=",".join(platforms),
            is_manifest_list=True, retry_of=retry_of, build_args=dict(definition.build_args),
            repository=definition.repository, base_image=final_base_image(revision.containerfile, definition.build_args),
        )
        Run.objects.filter(pk=run.pk).update(content_type=ContentType.objects.get_for_model(Build),
                                             object_id=str(manifest_list.pk))
        audit(action="build.start", summary=f"started {manifest_list} (manifest list of {', '.join(platforms)}, "
                                            f"{trigger})",
              actor=user, actor_name=actor_name, team=definition.team, obj=manifest_list, request=request,
              detail={"revision": revision.number, "platforms": platforms, "trigger": trigger,
                      "by": actor_name or (user.username if user is not None else trigger),
                      "retry_of": retry_of.pk if retry_of else None})
        for platform in platforms:
            build_start(revision=revision, user=user, trigger=trigger, platform=platform, actor_name=actor_name,
                        manifest_list=manifest_list, request=request)
        # After the members' own enqueues: one that could not be handed to a worker has failed, and so does the list.
        transaction.on_commit(lambda: manifest_list_settle(manifest_list.pk))
    return manifest_list


def build_retry(*, build: Build, user: User | None, trigger: str = "button", request=None) -> Build:
    """A new build of the same revision and platform (the old one stays as it was). A manifest list, or one of its
    members, is built again as a whole list."""
    if build.manifest_list_id:
        build = build.manifest_list
    if build.is_active:
        raise ValidationError(f"{build} is still {build.status}; cancel it or wait for it to end.")
    if build.is_manifest_list:
        return build_start_list(revision=build.revision, user=user, trigger=trigger, retry_of=build, request=request)
    return build_start(revision=build.revision, user=user, trigger=trigger, platform=build.platform, retry_of=build,
                       request=request)


def build_retry_run(*, run: Run, user: User | None, request=None) -> Build:
    """`build_retry` of the build this run is, for the core's retry view (registered in apps.py); the view has checked
    the user's role. Cancelling is the core's own (`portal.services.run_request_cancel`)."""
    build = Build.objects.with_related().filter(run=run).first()
    if build is None:
        raise ValidationError(f"{run} has no build to start again.")
    return build_retry(build=build, user=user, request=request)


def require_develop(user, team):
    """For code paths that must refuse rather than 404 (the JSON API already resolved the team)."""
    if user is not None and not user.is_superuser:
        if not can(user, team, Action.DEVELOP):
            raise PermissionDenied(f"Your role in {team} does not allow you to build.")


# --- Builders (portal-wide; superusers) ------------------------------------------------------------------------------


def _require_superuser(user):
    if user is not None and not user.is_superuser:
        raise PermissionDenied("Only portal administrators manage builders.")


def builder_save(*, form, user: User | None, request=None) -> Builder:
    """Create or change a builder from a valid BuilderForm."""
    _require_superuser(user)
    created = form.instance.pk is None
    with transaction.atomic():
        builder = form.save()
        audit(action="builder.create" if created else "builder.update",
              summary=f"{'added' if created else 'changed'} builder {builder} ({builder.kind}, {builder.architecture})",
              actor=user, obj=builder, request=request,
              detail={"changed": [f for f in form.changed_data if f != "private_key"],
                      "private_key_changed": "private_key" in form.changed_data and bool(form.cleaned_data.get("private_key"))})
    return builder


def builder_set_enabled(*, builder: Builder, enabled: bool, user: User | None, request=None) -> Builder:
    _require_superuser(user)
    with transaction.atomic():
        Builder.objects.filter(pk=builder.pk).update(enabled=enabled)
        builder.enabled = enabled
        audit(action="builder.enable" if enabled else "builder.disable",
              summary=f"{'enabled' if enabled else 'disabled'} builder {builder}", actor=user, obj=builder,
              request=request)
    return builder


def builder_check_health(*, builder: Builder) -> Builder:
    """Ask the builder for `podman version` (over SSH for remote ones) and record the answer."""
    ok, detail, version = False, "", ""
    try:
        with runner_for(builder) as runner:
            result = runner.run(podman.version_args(builder), watch=Watch(run=None, sink=None, deadline=None),
                                capture=True, echo=False)
            version = podman.parse_version(result.stdout)
            ok = bool(version)
            detail = f"podman {version}" if ok else "podman answered, but its version could not be read"
    except RunnerError as exc:
        detail = str(exc)
        if getattr(exc, "output_tail", None):
            detail += ": " + " ".join(exc.output_tail[-3:])
    except Exception as exc:  # noqa: BLE001 - any failure is a health finding
        detail = f"{type(exc).__name__}: {exc}"
    detail = storable(detail)
    Builder.objects.filter(pk=builder.pk).update(health_ok=ok, health_detail=detail[:2000], podman_version=version,
                                                 health_checked_at=timezone.now())
    builder.health_ok, builder.health_detail, builder.podman_version = ok, detail[:2000], version
    return builder


# --- Schedules -------------------------------------------------------------------------------------------------------


def builds_schedule_due(*, now=None) -> list[Build]:
    """Start the scheduled rebuilds that are due (called by beat every few minutes)."""
    now = now or timezone.now()
    started = []
    due = ImageDefinition.objects.exclude(schedule="").filter(next_scheduled_at__lte=now)
    for definition in due:
        with transaction.atomic():
            locked = ImageDefinition.objects.select_for_update().filter(pk=definition.pk,
                                                                        next_scheduled_at__lte=now).first()
            if locked is None:
                continue  # another beat run took it
            schedule_next(locked, after=now)
            revision = locked.current_revision()
            if revision is None or locked.builds.active().exists():
                continue
            started += build_start_all(revision=revision, user=None, trigger="schedule",
                                       actor_name=f"schedule ({locked.get_schedule_display().lower()})")
    return started


# --- Image retention (builds.retention: the dry run; builds.cleanup: the worker's part) ------------------------------

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_retention_policy_save(*, team: Team, definition: ImageDefinition | None, user: User | None, keep_last: int,
                                keep_days: int, keep_stage_history: int, on_schedule: bool = False,
                                request=None) -> ImageRetentionPolicy:
    """Save the retention policy of `definition` (None: the team's default). Team admins only. What is in use is kept
    whatever the numbers: there is no number that deletes what a stage holds, and keep_last is at least 1."""
    _check(user, team, Action.ADMIN)
    errors = {}
    if not isinstance(keep_last, int) or keep_last < 1:
        errors["keep_last"] = "Keep at least the newest build (1 or more)."
    for name, value in (("keep_days", keep_days), ("keep_stage_history", keep_stage_history)):
        if not isinstance(value, int) or value < 0:
            errors[name] = "A whole number, 0 or more."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        policy, created = ImageRetentionPolicy.objects.select_for_update().get_or_create(
            team=team, definition=definition,
            defaults={"keep_last": keep_last, "keep_days": keep_days, "keep_stage_history": keep_stage_history,
                      "on_schedule": on_schedule, "updated_by": user})
        before = {"keep_last": policy.keep_last, "keep_days": policy.keep_days,
                  "keep_stage_history": policy.keep_stage_history, "on_schedule": policy.on_schedule}
        policy.keep_last, policy.keep_days, policy.keep_stage_history = keep_last, keep_days, keep_stage_history
        policy.on_schedule, policy.updated_by = on_schedule, user
        policy.save()
        audit(action="images.retention_policy", actor=user, team=team, obj=definition or policy, request=request,
              summary=f"image retention of {definition or f'{team.slug} (team default)'}: newest {keep_last}, "
                      f"{keep_days} days, {keep_stage_history} stage promotions"
                      + (", applied daily" if on_schedule else ""),
              detail={"before": None if created else before, "after": {
                  "keep_last": keep_last, "keep_days": keep_days, "keep_stage_history": keep_stage_history,
                  "on_schedule": on_schedule}})
    return policy


def image_cleanup_start(*, definition: ImageDefinition, user: User | None, digests: list[str],
                        bytes_expected: int | None = None, trigger: str = "button", request=None) -> ImageCleanup:
    """Queue the deletion of `digests` (what the dry run listed and someone confirmed) from `definition`'s repository.
    Team admins only. The worker (`builds.cleanup`) asks the keepers again before each delete: a digest that came into
    use meanwhile is kept."""
    _check(user, definition.team, Action.ADMIN)
    digests = list(dict.fromkeys(digests))
    if not digests:
        raise ValidationError("Nothing to delete: the dry run lists no image that may go.")
    malformed = [d for d in digests if not isinstance(d, str) or not DIGEST_RE.match(d)]
    if malformed:
        raise ValidationError(f"{str(malformed[0])[:80]!r} is not an image digest (sha256:<64 hex digits>).")
    known = set(Build.objects.in_registry().filter(definition=definition, digest__in=digests)
                .values_list("digest", flat=True))
    unknown = [d for d in digests if d not in known]
    if unknown:
        raise ValidationError(f"{unknown[0]} is not an image of {definition} still in the registry: reload the dry run.")
    with transaction.atomic():
        ImageDefinition.objects.select_for_update().filter(pk=definition.pk).first()
        if ImageCleanup.objects.filter(definition=definition, run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists():
            raise ValidationError(f"A cleanup of {definition} is already running: wait for it to finish.")
        run = run_create(kind=RunKind.MAINTENANCE, title=f"Delete {len(digests)} image(s) of {definition}",
                         team=definition.team, started_by=user, trigger=trigger)
        cleanup = ImageCleanup.objects.create(definition=definition, run=run, requested=digests,
                                              bytes_expected=bytes_expected)
        Run.objects.filter(pk=run.pk).update(content_type=ContentType.objects.get_for_model(ImageCleanup),
                                             object_id=str(cleanup.pk))
        audit(action="images.cleanup.start", actor=user, team=definition.team, obj=cleanup, request=request,
              summary=f"asked to delete {len(digests)} image(s) of {definition} from {definition.repository}",
              detail={"digests": digests, "bytes_expected": bytes_expected, "trigger": trigger})
        from .tasks import image_cleanup_run  # a cycle: builds.tasks calls builds.cleanup, which calls services

        transaction.on_commit(lambda: run_enqueue(image_cleanup_run, cleanup.pk, run=run, what="the image cleanup"))
    return cleanup


def build_set_pinned(*, build: Build, pinned: bool, user: User | None, request=None) -> Build:
    """Pin a build's image (retention never deletes it) or unpin it. Developers of the team."""
    _check(user, build.definition.team, Action.DEVELOP)
    with transaction.atomic():
        Build.objects.filter(pk=build.pk).update(pinned=pinned)
        build.pinned = pinned
        audit(action="build.pin" if pinned else "build.unpin", actor=user, team=build.definition.team, obj=build,
              request=request, summary=f"{'pinned' if pinned else 'unpinned'} the image of {build} ({build.short_digest})")
    return build
