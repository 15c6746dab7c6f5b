"""Builder hygiene: a builder's podman store stays under its size budget without losing the cache that makes the next
rebuild fast.

Every build leaves its image in the builder's store (tagged REPO:build-N and REPO:rev-SHA), and every conversion the
image it pulled. Above `Builder.storage_budget_bytes`, a prune:

1. removes stopped containers;
2. takes the names off older build results, oldest first, one at a time, and removes the images that became
   dangling (`podman image prune`: no name, nothing built on them), measuring after each and stopping once under the
   budget. It never touches each definition's newest build per platform on this builder (its image and the
   chain of intermediate images under it are what `podman build --layers` reuses), a build still running, or any
   other named image (base images, whatever someone put there);
3. says so when the store is still over the budget with only those left.

Beat runs it every hour (`builds.tasks.builders_prune`); a superuser may run it now from the builders page. The
builder's row keeps the disk use, when it was measured and pruned, and what the last pass did.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from django.db import transaction
from django.utils import timezone

from portal.formatting import size
from portal.models import RunStatus
from portal.services import audit

from . import podman
from .models import Build, Builder
from .runner import CommandFailed, RunnerError, Watch, runner_for

log = logging.getLogger(__name__)



def removable_builds(builder) -> list[Build]:
    """Build results on `builder` a prune may remove, oldest first: all but each definition's newest build per
    platform (by number, whatever its status: its layers are the freshest cache), never one still running."""
    builds = list(Build.objects.filter(builder=builder).exclude(image_id="").select_related("run")
                  .order_by("definition_id", "platform", "-number"))
    newest: dict[tuple, int] = {}
    removable = []
    for build in builds:
        key = (build.definition_id, build.platform)
        if key not in newest:
            newest[key] = build.number
            continue
        if build.run.status in (RunStatus.QUEUED, RunStatus.RUNNING):
            continue
        removable.append(build)
    return sorted(removable, key=lambda b: (b.run.created_at, b.pk))


def builder_prune(*, builder: Builder, user=None, force: bool = False, request=None) -> Builder:
    """Measure the builder's store and prune it if it is over its budget (or `force`: a person asked, and only down to
    the budget still). Records the outcome on the builder; a failure to reach it is recorded, not raised."""
    watch = Watch(run=None, sink=None, deadline=None)
    removed, note = [], ""
    before = used = None
    try:
        with runner_for(builder) as runner:
            used = before = _measure(runner, builder, watch)
            budget = builder.storage_budget_bytes
            if budget is None or used <= budget:
                note = (f"{size(used)} used" + (f" of {size(budget)}" if budget is not None else ", no budget")
                        + ": nothing to prune.")
            else:
                runner.run(podman.container_prune_args(builder), watch=watch, capture=True, echo=False)
                candidates = removable_builds(builder)
                while used > budget and candidates:
                    build = candidates.pop(0)
                    try:
                        runner.run(podman.untag_args(builder, build.image_id), watch=watch, capture=True, echo=False)
                    except CommandFailed:
                        continue  # gone already (pruned by hand)
                    removed.append(build)
                    runner.run(podman.image_prune_args(builder), watch=watch, capture=True, echo=False)
                    used = _measure(runner, builder, watch)
                note = (f"Pruned {size(before - used)}: {len(removed)} older build result(s) removed; {size(used)} used "
                        f"of {size(budget)}.")
                if used > budget:
                    note += (" Still over the budget: what is left is each definition's newest build (the cache of "
                             "the next rebuild) and base images. Raise the budget or give the builder more disk.")
    except RunnerError as exc:
        note = f"Could not measure the store: {exc}"[:500]
    now = timezone.now()
    changes = {"storage_checked_at": now, "storage_note": note[:500]}
    if used is not None:
        changes["storage_used_bytes"] = used
    if removed:
        changes["storage_pruned_at"] = now
    with transaction.atomic():
        Builder.objects.filter(pk=builder.pk).update(**changes)
        if removed or force:
            audit(action="builder.prune", actor=user, actor_name="portal", obj=builder, request=request,
                  summary=f"builder {builder}: {note}"[:500],
                  detail={"before": before, "after": used, "builds": [b.pk for b in removed]})
    for field, value in changes.items():
        setattr(builder, field, value)
    return builder


def _measure(runner, builder, watch) -> int:
    return podman.parse_system_df(runner.run(podman.system_df_args(builder), watch=watch, capture=True,
                                             echo=False).stdout)


def builders_prune() -> dict[str, str]:
    """Beat: every enabled builder with a budget, measured and pruned if over it. {name: what happened}."""
    done = defaultdict(str)
    for builder in Builder.objects.filter(enabled=True, storage_budget_bytes__isnull=False):
        done[builder.name] = builder_prune(builder=builder).storage_note
    return dict(done)
