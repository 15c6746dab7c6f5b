"""What releases tell `/metrics` (registered in `ReleasesConfig.ready`), read at scrape time."""

from django.db.models import Count

from portal.models import Team

from .models import Promotion, PromotionStatus


def promotions_waiting():
    """{(team,): promotions waiting for approval} for every team (0 for those with none)."""
    waiting = dict(Promotion.objects.filter(status=PromotionStatus.PENDING)
                   .values_list("target_stage__team__slug").order_by().annotate(n=Count("id")))
    return {(slug,): waiting.get(slug, 0) for slug in Team.objects.values_list("slug", flat=True)}
