"""The gate tests' steps: ask for a promotion, approve it (with the digest the approver saw), find its apply runs."""

from builds.releases import services as promotions
from portal.models import Run, RunKind


def request(promo, build, stage, user=None, **kwargs):
    return promotions.promotion_request(definition=promo.definition, build=build, target_stage=promo.stages[stage],
                                        user=user or promo.personas.developer, reason=kwargs.pop("reason", "ready"),
                                        **kwargs)


def approve(promotion, user, **kwargs):
    return promotions.promotion_approve(promotion=promotion, user=user, digest=kwargs.pop("digest", promotion.digest),
                                        comment=kwargs.pop("comment", "looks good"), **kwargs)


def apply_runs(promotion):
    return Run.objects.filter(kind=RunKind.PROMOTION_APPLY, object_id=str(promotion.pk))
