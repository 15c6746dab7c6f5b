"""What a worker does with an `ImageCleanup`: the whole of the `builds.tasks.image_cleanup_run` task.

1. Claim the run (a redelivered task does nothing).
2. Make the dry run again (`builds.retention.plan`): a digest that came into use since the person confirmed (a stage
   took it, a host booted it) is kept, with the reason, and so is one that is no longer the definition's.
3. For each remaining digest, ask every keeper once more, then delete the manifest by digest through the registry API
   (`skopeo delete docker://REPO@sha256:...`, which also removes its tags) and check it is gone (a GET over the
   registry's HTTP API; every read of the run shares one kept-open session, `builds.registryapi`). A registry that
   refuses deletes stops the run at the first one, with the setting to change. One delete is one manifest: each image
   is gone completely or still there, never half.
4. Record each deletion at once, in its own transaction: the builds' `image_deleted_at`, the cleanup's list, one audit
   event per digest.
   Then announce `image.deleted`: what belongs to the image goes after it, never before it (the supply chain removes
   its signatures from the lookaside store and cosign's attachment tags from the registry).
5. Run the registry's garbage collection (REGISTRY_GC_COMMAND), which frees the blobs no manifest refers to any more;
   without it the blobs stay until the registry's own collection runs.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portal import runs
from portal.formatting import short_digest, size
from portal.models import RunStatus
from portal.registry import announce
from portal.services import audit, run_set_phase

from . import registry, registryapi, retention, services
from .models import Build, ImageCleanup, ImageDefinition, ImageRetentionPolicy
from .runner import Watch

log = logging.getLogger(__name__)

# Announced (portal.registry) after an image is deleted from the registry and the deletion is on record, with
# repository, digest, access (registry.RegistryAccess), team and log (writes a line to the cleanup's log).
IMAGE_DELETED = "image.deleted"


class CleanupFailed(runs.Failed):
    """The cleanup could not do its work; the message is the reason people read."""


def image_cleanup_execute(cleanup_id: int) -> None:
    cleanup = ImageCleanup.objects.select_related("definition", "definition__team", "run").filter(pk=cleanup_id).first()
    if cleanup is None or cleanup.run.status != RunStatus.QUEUED:
        log.info("image_cleanup_run %s: nothing to do", cleanup_id)
        return
    run = cleanup.run
    if not runs.claim(run, phase="checking"):
        return
    limit = runs.Limit(settings.IMAGE_CLEANUP_TIMEOUT_SECONDS, "IMAGE_CLEANUP_TIMEOUT_SECONDS")
    access = registry.access_for(cleanup.definition.team, cleanup.definition.registry)
    with runs.executing(run, what="the image cleanup", limit=limit,
                        stopped="the images deleted so far stay deleted (each is recorded); the others are untouched",
                        unavailable="This worker cannot run skopeo") as execution, registryapi.session(access):
        _clean(cleanup, execution, limit)


def _clean(cleanup, execution, limit):
    run, sink = execution.run, execution.sink
    definition = cleanup.definition
    watch = Watch(run=run, sink=sink, deadline=time.monotonic() + limit.seconds)
    access = registry.access_for(definition.team, definition.registry)
    sink.write(f"Delete {len(cleanup.requested)} image(s) of {definition} from {definition.repository}, as the dry run "
               "listed them; each is checked again first.")
    try:
        fresh = retention.plan(definition, measure=False)
    except retention.KeeperFailed as exc:
        raise CleanupFailed(str(exc)) from exc
    verdicts = {verdict.digest: verdict for verdict in fresh.verdicts}
    to_delete = []
    for digest in cleanup.requested:
        verdict = verdicts.get(digest)
        if verdict is None:
            _keep(cleanup, digest, ["it is no longer an image of this definition in the registry"], sink)
        elif verdict.keep:
            _keep(cleanup, digest, verdict.reasons, sink)
        else:
            to_delete.append(verdict)
    # A manifest list goes before its members' images, so it never names an image that is gone.
    to_delete.sort(key=lambda verdict: not verdict.newest.is_manifest_list)
    run_set_phase(run, "deleting")
    failed = {}
    for verdict in to_delete:
        watch.poll()
        digest = verdict.digest
        try:
            found = retention.reasons_in_use(definition, verdict.group or [digest])
            reasons = found.get(digest) or [reason for other in verdict.group for reason in found.get(other, [])]
        except retention.KeeperFailed as exc:
            raise CleanupFailed(str(exc)) from exc
        if reasons:
            _keep(cleanup, digest, reasons, sink)
            continue
        repository = verdict.newest.repository or definition.repository
        try:
            registry.delete_manifest(repository, digest, access=access)
        except registry.DeletesRefused as exc:
            raise CleanupFailed(str(exc)) from exc
        except registry.ManifestUnknown:
            sink.write(f"{repository}@{digest} was gone already (deleted outside the portal).")
        except registry.RegistryError as exc:
            failed[digest] = str(exc)[:500]
            sink.write(f"Could not delete {repository}@{digest}: {exc}. It is still there.")
            continue
        if registry.manifest_exists(repository, digest, access=access):
            failed[digest] = "the registry still serves it after the delete"
            sink.write(f"{repository}@{digest} is still served after the delete: kept on record as present.")
            continue
        _record_deleted(cleanup, verdict, run)
        builds = ", ".join(f"build {b.number}" for b in verdict.builds)
        sink.write(f"Deleted {repository}@{digest} ({builds}) and its tags.")
        # What belongs to the image (its signatures) goes now, after the image and never before it.
        announce(IMAGE_DELETED, repository=repository, digest=digest, access=access, team=definition.team,
                 log=sink.write)
    if failed:
        ImageCleanup.objects.filter(pk=cleanup.pk).update(failed=failed)
    cleanup.refresh_from_db()
    sink.write(f"Deleted {len(cleanup.deleted)}, kept {len(cleanup.kept)} that came into use, "
               f"{len(failed)} the registry did not delete.")
    if cleanup.deleted:
        run_set_phase(run, "collecting garbage")
        _collect_garbage(cleanup, sink)
    if failed:
        first = next(iter(failed.items()))
        raise CleanupFailed(f"{len(failed)} image(s) were not deleted ({short_digest(first[0])}: {first[1]}); "
                            f"{len(cleanup.deleted)} were.")
    with transaction.atomic():
        audit(action="images.cleanup.done", actor_name="portal", team=definition.team, obj=cleanup,
              summary=f"deleted {len(cleanup.deleted)} image(s) of {definition}"
                      + (f", kept {len(cleanup.kept)} found in use" if cleanup.kept else ""),
              detail={"deleted": cleanup.deleted, "kept": cleanup.kept, "run": run.pk,
                      "garbage_collected": cleanup.garbage_collected})
        execution.succeed()


def _keep(cleanup, digest, reasons, sink):
    with transaction.atomic():
        locked = ImageCleanup.objects.select_for_update().get(pk=cleanup.pk)
        locked.kept = {**locked.kept, digest: list(reasons)}
        locked.save(update_fields=["kept"])
    sink.write(f"Kept {digest}: {'; '.join(reasons)}.")


def _record_deleted(cleanup, verdict, run):
    """The deletion on record at once (the registry's change cannot be rolled back with a later failure)."""
    now = timezone.now()
    definition = cleanup.definition
    with transaction.atomic():
        locked = ImageCleanup.objects.select_for_update().get(pk=cleanup.pk)
        locked.deleted = [*locked.deleted, verdict.digest]
        locked.save(update_fields=["deleted"])
        Build.objects.filter(definition=definition, digest=verdict.digest, image_deleted_at__isnull=True).update(
            image_deleted_at=now, deleted_by_cleanup=locked)
        audit(action="images.delete", actor_name="portal", team=definition.team, obj=verdict.newest,
              summary=f"deleted {definition.repository}@{verdict.digest} "
                      f"({', '.join(f'build {b.number}' for b in verdict.builds)}) by retention",
              detail={"digest": verdict.digest, "builds": [b.pk for b in verdict.builds], "cleanup": cleanup.pk,
                      "run": run.pk, "size": verdict.size})


def garbage_collect_command() -> list[str]:
    return shlex.split(settings.REGISTRY_GC_COMMAND) if settings.REGISTRY_GC_COMMAND else []


def _collect_garbage(cleanup, sink):
    """The registry's garbage collection, which frees the blobs of deleted manifests. Never with
    --delete-untagged: it would also remove the untagged per-architecture manifests of manifest lists."""
    argv = garbage_collect_command()
    if not argv:
        sink.write("REGISTRY_GC_COMMAND is not set: the registry frees the deleted images' blobs at its own next "
                   "garbage collection.")
        return
    if "--delete-untagged" in " ".join(argv) or "-m" in argv:
        raise CleanupFailed("REGISTRY_GC_COMMAND asks for --delete-untagged, which deletes the manifests of manifest "
                            "lists' architectures: remove it. The images were deleted; their blobs were not freed.")
    sink.write("$ " + shlex.join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True,  # noqa: S603 # nosec B603 - the operator's setting
                              timeout=settings.IMAGE_CLEANUP_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CleanupFailed(f"The registry's garbage collection did not run ({exc}); the images were deleted, their "
                            "blobs are freed at its next collection.") from exc
    lines = (done.stdout + done.stderr).splitlines()
    eligible = sum(1 for line in lines if "blob eligible for deletion" in line)
    for line in lines[-20:]:
        sink.write(line)
    if done.returncode != 0:
        raise CleanupFailed(f"The registry's garbage collection exited with status {done.returncode}; the images were "
                            "deleted, their blobs are freed at its next collection.")
    ImageCleanup.objects.filter(pk=cleanup.pk).update(garbage_collected=True)
    expected = f" (the dry run expected {size(cleanup.bytes_expected)})" if cleanup.bytes_expected is not None else ""
    sink.write(f"Garbage collection removed {eligible} blob(s){expected}.")


# --- The daily retention pass (portal.retention), for policies that apply themselves ----------------------------------


def scheduled_cleanups(*, now, previous=None) -> dict:
    """The retention step builds registers: for each definition whose policy (its own, else the team's default) says
    `on_schedule`, make the dry run and queue a cleanup of what it lists. The pass records how many images were queued
    and for which definitions; each cleanup's run says what it deleted. A definition whose keepers cannot answer is
    skipped and named, nothing deleted."""
    own = ImageRetentionPolicy.objects.filter(definition__isnull=False)
    scheduled_own = set(own.filter(on_schedule=True).values_list("definition_id", flat=True))
    with_own = set(own.values_list("definition_id", flat=True))
    default_teams = set(ImageRetentionPolicy.objects.filter(definition__isnull=True, on_schedule=True)
                        .values_list("team_id", flat=True))
    definitions = ImageDefinition.objects.select_related("team").filter(pk__in=scheduled_own) | \
        ImageDefinition.objects.select_related("team").filter(team_id__in=default_teams).exclude(pk__in=with_own)
    queued, cleanups, skipped = 0, {}, {}
    for definition in definitions.order_by("pk"):
        try:
            found = retention.plan(definition, now=now)
            if not found.doomed:
                continue
            cleanup = services.image_cleanup_start(definition=definition, user=None, digests=found.doomed_digests(),
                                          bytes_expected=found.bytes_freed, trigger="schedule")
        except (retention.KeeperFailed, ValidationError) as exc:
            skipped[str(definition)] = str(exc)[:300]
            continue
        queued += len(cleanup.requested)
        cleanups[str(definition)] = cleanup.pk
    return {"count": queued, "cleanups": cleanups, "skipped": skipped}
