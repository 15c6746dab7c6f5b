"""What the stages hold, for the builds pages: fragments that a definition's page and a build's page load with htmx
(hx-trigger="load").

builds never imports releases: it finds these URLs through `portal.registry.fragment_url` (registered in
`builds.releases.apps`) and leaves the card out when no app serves them. Each fragment checks access to the object it is
about with that object's own helper (`builds.access`), so it shows exactly to whom the page shows, in a fixed number of
queries however many stages, promotions and builds there are.
"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from builds.access import get_build_for_user, get_definition_for_user
from builds.models import Build
from portal import registry
from portal.access import can
from portal.models import Action

from .gate import current_entries, stage_board
from .models import Promotion

PROMOTIONS_SHOWN = 5  # of a build's digest


@login_required
@require_GET
def definition_stages(request, pk):
    """The Stages card of a definition's page: what each stage of the team holds of it now; for a developer, when the
    first stage holds nothing, a link to promote its latest good build there. How many hosts follow each stage's tag is
    the hosts app's fragment ("definition.following"), loaded from this one so that the stages are there to fill in."""
    definition = get_definition_for_user(request.user, pk)
    cells = stage_board(definition.team, [definition])[0]["cells"]
    can_develop = can(request.user, definition.team, Action.DEVELOP)
    first_promotion = None
    if can_develop and cells and cells[0][1] is None:
        first_promotion = Build.objects.filter(definition=definition).succeeded().order_by("-number").first()
    return render(request, "releases/_definition_stages.html", {
        "definition": definition, "stage_rows": cells, "first_promotion": first_promotion,
        "following_url": registry.fragment_url("definition.following", definition.pk),
    })


@login_required
@require_GET
def build_stages(request, pk):
    """Where a build's digest went: the stages that hold it now and its latest promotions (the user's, through
    `Promotion.objects.visible_to`)."""
    build = get_build_for_user(request.user, pk)
    stages_holding, promotions = [], []
    if build.digest:
        stages = list(build.definition.team.stages.all())
        holding = current_entries(stages, [build.definition])
        stages_holding = [stage for stage in stages
                          if getattr(holding.get((stage.pk, build.definition_id)), "digest", "") == build.digest]
        promotions = list(Promotion.objects.visible_to(request.user)
                          .filter(definition=build.definition, digest=build.digest)
                          .select_related("target_stage").order_by("-pk")[:PROMOTIONS_SHOWN + 1])
    return render(request, "releases/_build_stages.html", {
        "build": build, "stages_holding": stages_holding, "promotions": promotions[:PROMOTIONS_SHOWN],
        "more_promotions": len(promotions) > PROMOTIONS_SHOWN,
    })
