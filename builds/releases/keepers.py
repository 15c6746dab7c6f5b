"""Which digests releases need kept in the registry (registered in `portal.registry.digest_keeper`, asked by builds'
image retention): what each stage holds, in the portal's history and in the registry's own stage tag; what each stage
held in its last `keep_stage_history` promotions, so a stage rollback finds it; and open promotions' digests."""

from __future__ import annotations

from collections import defaultdict

from builds import registry
from builds.retention import policy_for

from .models import Promotion, PromotionStatus, Stage, StageHistory

OPEN = (PromotionStatus.PENDING, PromotionStatus.APPROVED, PromotionStatus.APPLYING)


def digests_in_use(*, definition, digests) -> dict[str, list[str]]:
    keep_history = policy_for(definition).keep_stage_history
    found: dict[str, list[str]] = defaultdict(list)
    stages = list(Stage.objects.filter(team_id=definition.team_id).order_by("position"))
    entries = defaultdict(list)
    for entry in (StageHistory.objects.filter(definition=definition).order_by("stage_id", "-applied_at", "-id")
                  .values("stage_id", "digest")):
        entries[entry["stage_id"]].append(entry["digest"])
    # Only the stage tags the registry has are read: one tag list instead of a read of every stage's tag.
    access = registry.access_for(definition.team, definition.registry)
    tagged = registry.tags(definition.repository, access=access) if stages else set()
    for stage in stages:
        history = entries.get(stage.pk, [])
        if history:
            found[history[0]].append(f"stage {stage.name} holds it")
        for back, digest in enumerate(history[1:keep_history + 1], start=1):
            if digest != history[0]:
                found[digest].append(f"stage {stage.name} held it {back} promotion(s) ago (a rollback may want it)")
        tag_digest = _tag_digest(definition, stage, access) if stage.tag in tagged else ""
        if tag_digest and (not history or tag_digest != history[0]):
            found[tag_digest].append(f"the registry's tag {stage.tag} points at it")
    for promotion in Promotion.objects.filter(definition=definition, status__in=OPEN, digest__in=digests).select_related(
            "target_stage"):
        found[promotion.digest].append(f"promotion #{promotion.pk} to {promotion.target_stage.name} is "
                                       f"{promotion.get_status_display().lower()}")
    return {digest: reasons for digest, reasons in found.items() if digest in digests}


def _tag_digest(definition, stage, access) -> str:
    """What the stage tag resolves to in the registry now ("" when there is no such tag): a tag moved outside the
    portal still protects its image. A registry that does not answer raises, and nothing is deleted."""
    try:
        text = registry.raw_manifest(stage.reference(definition), access=access)
    except registry.ManifestUnknown:
        return ""
    return registry.manifest_digest(text)
