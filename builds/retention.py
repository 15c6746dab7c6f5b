"""Image retention: which of a definition's images may leave the registry, and why each of the others stays.

`plan(definition)` is the dry run. It looks at every digest the definition's succeeded builds pushed that retention has
not deleted yet, and keeps a digest when any of these says so:

- the policy (`ImageRetentionPolicy`: the definition's, else the team's default, else the settings'): the newest
  `keep_last` builds, and builds younger than `keep_days` days;
- a build of that digest is pinned by hand;
- a keeper registered in `portal.registry.digest_keeper` by the apps that know what is in use, which builds may not
  import: releases (what each stage holds, what it held in its last `keep_stage_history` promotions, open
  promotions), disk images (a disk image made from it) and hosts (a host boots it, has it staged, or keeps it as its
  rollback deployment, so `bootc rollback` never meets "image not found").

A digest nothing keeps goes. The bytes freed are the registry's blobs (manifests, configs, layers) that only the
digests that go refer to, read from the registry; blobs shared with a kept image (a common base) stay. Deleting is
`builds.cleanup`, which asks all of this again right before each delete.
"""

from __future__ import annotations

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from portal import registry as portal_registry
from portal.formatting import duration

from . import registry, registryapi
from .models import Build, ImageRetentionPolicy

log = logging.getLogger(__name__)

REGISTRY_READERS = registryapi.CONNECTIONS  # manifests read at once, for the bytes a dry run frees


def policy_for(definition) -> ImageRetentionPolicy:
    """The definition's own policy, else its team's default, else an unsaved one with the settings' numbers."""
    policy = (ImageRetentionPolicy.objects.filter(definition=definition).first()
              or ImageRetentionPolicy.objects.filter(team_id=definition.team_id, definition__isnull=True).first())
    if policy is None:
        policy = ImageRetentionPolicy(team_id=definition.team_id, keep_last=settings.IMAGE_RETENTION_KEEP_LAST,
                                      keep_days=settings.IMAGE_RETENTION_KEEP_DAYS,
                                      keep_stage_history=settings.IMAGE_RETENTION_KEEP_STAGE_HISTORY)
    return policy


@dataclass
class Verdict:
    """One digest of the definition: its builds (newest first), and why it stays (no reasons: it goes)."""

    digest: str
    builds: list[Build]
    reasons: list[str] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)
    group: list[str] = field(default_factory=list)  # a manifest list and its members: kept or deleted together
    missing: bool = False  # the registry does not have it (deleted outside the portal)

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    @property
    def newest(self) -> Build:
        return self.builds[0]

    @property
    def size(self) -> int | None:
        return self.newest.size

    @property
    def built_at(self):
        return built_at(self.newest)


@dataclass
class Plan:
    definition: object
    policy: ImageRetentionPolicy
    now: object
    verdicts: list[Verdict]
    bytes_freed: int | None = None
    registry_error: str = ""

    @property
    def doomed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.keep]

    @property
    def kept(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.keep]

    def doomed_digests(self) -> list[str]:
        return [v.digest for v in self.doomed]


def built_at(build):
    """When the build's image reached the registry (its run's end for builds recorded without a push time)."""
    return build.pushed_at or build.run.finished_at or build.run.created_at


class KeeperFailed(Exception):
    """A keeper could not say what is in use: nothing may be deleted on a guess."""


def reasons_in_use(definition, digests) -> dict[str, list[str]]:
    """{digest: reasons} from every registered keeper (stages, disk images, hosts...). Raises KeeperFailed."""
    found: dict[str, list[str]] = {}
    digests = set(digests)
    if not digests:
        return found
    for keeper in portal_registry.digest_keepers():
        try:
            answer = keeper.function(definition=definition, digests=digests)
        except Exception as exc:
            log.exception("digest keeper %s failed", keeper.name)
            raise KeeperFailed(f"{keeper.name} could not say which images are in use ({type(exc).__name__}: {exc}); "
                               "nothing is deleted until it can.") from exc
        for digest, reasons in answer.items():
            if digest in digests:
                found.setdefault(digest, []).extend(reasons)
    return found


def plan(definition, *, now=None, measure=True) -> Plan:
    """The dry run for `definition` (see the module's docstring). With `measure`, the registry is read for the bytes
    freed; a registry that does not answer leaves them unknown (`registry_error` says why) and changes no verdict.
    Every read of the registry (the keepers' stage tags, the manifests measured) shares one kept-open session."""
    with registryapi.session(registry.access_for(definition.team, definition.registry)):
        return _plan(definition, now=now or timezone.now(), measure=measure)


def _plan(definition, *, now, measure) -> Plan:
    policy = policy_for(definition)
    builds = list(Build.objects.in_registry().filter(definition=definition).select_related("run")
                  .order_by("-number"))
    verdicts: dict[str, Verdict] = {}
    for build in builds:
        verdicts.setdefault(build.digest, Verdict(digest=build.digest, builds=[])).builds.append(build)
    for build in builds[:policy.keep_last]:
        verdicts[build.digest].reasons.append(f"build {build.number} is among the newest {policy.keep_last}")
    if policy.keep_days:
        young = now - timedelta(days=policy.keep_days)
        for build in builds:
            built = built_at(build)
            if built >= young and not any(f"build {build.number} " in r for r in verdicts[build.digest].reasons):
                verdicts[build.digest].reasons.append(f"build {build.number} was built {duration(now - built, coarse=True)} ago "
                                                      f"(the policy keeps {policy.keep_days} days)")
    for build in builds:
        if build.pinned:
            verdicts[build.digest].reasons.append(f"build {build.number} is pinned")
    for digest, reasons in reasons_in_use(definition, verdicts).items():
        verdicts[digest].reasons.extend(reasons)
    _keep_lists_whole(builds, verdicts)
    result = Plan(definition=definition, policy=policy, now=now, verdicts=list(verdicts.values()))
    if measure and result.doomed:
        _measure(result)
    return result


def _keep_lists_whole(builds, verdicts) -> None:
    """A manifest list and its members' images stand or fall together: a host boots a member's digest while its stage
    holds the list's, and a list whose member is gone cannot be pulled for that architecture."""
    by_pk = {build.pk: build for build in builds}
    groups: dict[int, list[Build]] = {}
    for build in builds:
        if build.is_manifest_list:
            groups.setdefault(build.pk, []).insert(0, build)
        elif build.manifest_list_id in by_pk:
            groups.setdefault(build.manifest_list_id, []).append(build)
    for pk, group in groups.items():
        if pk not in by_pk:
            continue
        manifest_list = by_pk[pk]
        digests = list(dict.fromkeys(build.digest for build in group))
        kept = [build for build in group if verdicts[build.digest].reasons]
        for build in group:
            verdicts[build.digest].group = digests
            if not kept or verdicts[build.digest].reasons:
                continue
            if build is manifest_list:
                verdicts[build.digest].reasons.append(", ".join(f"its {k.platform} image (build {k.number})"
                                                                for k in kept) + " is kept")
            else:
                verdicts[build.digest].reasons.append(f"it is the {build.platform} image of manifest list build "
                                                      f"{manifest_list.number}, which is kept")


def _measure(result: Plan) -> None:
    """Bytes freed: blobs the doomed digests refer to and no kept one does."""
    definition = result.definition
    access = registry.access_for(definition.team, definition.registry)

    def read(verdict):
        repository = verdict.newest.repository or definition.repository
        try:
            verdict.blobs = registry.manifest_blobs(repository, verdict.digest, access=access)
        except registry.ManifestUnknown:
            verdict.missing = True

    try:
        with ThreadPoolExecutor(max_workers=REGISTRY_READERS) as pool:
            # Each read in the plan's context, so it reads through the plan's session.
            for future in [pool.submit(contextvars.copy_context().run, read, v) for v in result.verdicts]:
                future.result()
    except registry.RegistryError as exc:
        result.registry_error = f"The registry did not answer for every image ({exc}): the bytes freed are unknown."
        return
    kept = {blob for verdict in result.kept for blob in verdict.blobs}
    freed = {blob: size for verdict in result.doomed for blob, size in verdict.blobs.items() if blob not in kept}
    result.bytes_freed = sum(freed.values())
