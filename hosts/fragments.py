"""Who runs this image: the hosts fragments that the builds and release pages load with htmx (hx-trigger="load"), and
the release map that the dashboard and the definition page load (`hosts.releasemap`).

Builds and releases never import hosts; they find these URLs through `portal.registry.fragment_url` (registered in
`hosts.apps`) and leave the card out when no app serves it. Each fragment checks access to the object it is about with
that object's own helper (`builds.access`, `builds.releases.access`), so it shows exactly to whom the page shows, and
counts hosts through `Host.objects.visible_to` in a fixed number of queries, however many hosts and digests there are.
"""

from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.shortcuts import render
from django.views.decorators.http import require_GET

from builds.access import get_build_for_user, get_definition_for_user
from builds.models import Build, ImageDefinition
from builds.releases.access import get_promotion_for_user, get_stage_for_user
from builds.releases.gate import stage_board
from portal.views import current_team

from . import releasemap
from .models import Host

HOSTS_SHOWN = 25  # on a stage's page
TRACKING_SHOWN = 50  # on a promotion's card
MAP_DEFINITIONS = 8  # on the dashboard's release map
MAP_REFRESH = "every 30s"  # the dashboard has no websocket: the map polls, as the pages' other live parts do


@login_required
@require_GET
def definition_hosts(request, pk):
    """The "Who runs this image" card of a definition's page, once it has a revision: which of its digests hosts boot,
    and which stage holds each."""
    definition = get_definition_for_user(request.user, pk)
    cells = stage_board(definition.team, [definition])[0]["cells"]
    hosts = Host.objects.visible_to(request.user)
    running = hosts.by_digest(Build.objects.filter(definition=definition).exclude(digest="").values("digest"))
    built = {}
    for build in (Build.objects.filter(definition=definition, digest__in=list(running)).select_related("revision")
                  .order_by("-number")):
        built[build.digest] = build  # the first build that made it wins
    stages_of = {}
    for stage, entry in cells:
        if entry is not None:
            stages_of.setdefault(entry.digest, []).append(stage)
    who_runs = sorted(((digest, built.get(digest), n, stages_of.get(digest, [])) for digest, n in running.items()),
                      key=lambda row: (-row[2], row[0]))
    return render(request, "hosts/_definition_hosts.html", {
        "definition": definition, "has_revision": definition.revisions.exists(),
        "who_runs": who_runs, "hosts_running": sum(running.values()),
        "first_tag": cells[0][0].tag if cells else "prod",
    })


@login_required
@require_GET
def definition_following(request, pk):
    """How many hosts follow each stage's tag of a definition, put out of band into the stage list that the releases
    app's fragment ("definition.stages") shows on the definition's page, which loads this one once it is there."""
    definition = get_definition_for_user(request.user, pk)
    stages = list(definition.team.stages.all())
    following = Host.objects.visible_to(request.user).count_following(stage.reference(definition) for stage in stages)
    return render(request, "hosts/_definition_following.html", {
        "following": [(stage, following.get(stage.reference(definition), 0)) for stage in stages]})


@login_required
@require_GET
def build_hosts(request, pk):
    """How many hosts the user may see boot a build's digest, linking to them."""
    build = get_build_for_user(request.user, pk)
    running = Host.objects.visible_to(request.user).by_digest([build.digest]).get(build.digest, 0) if build.digest else 0
    return render(request, "hosts/_build_hosts.html", {"build": build, "hosts_running": running})


@login_required
@require_GET
def promotion_hosts(request, pk):
    """The hosts of the team that track a promotion's stage tag: they pick its digest up at their next upgrade."""
    promotion = get_promotion_for_user(request.user, pk)
    stage, definition = promotion.target_stage, promotion.definition
    hosts = (Host.objects.visible_to(request.user).filter(team=stage.team).following([stage.reference(definition)])
             .order_by("name"))
    shown = list(hosts[:TRACKING_SHOWN])
    count = hosts.count() if len(shown) == TRACKING_SHOWN else len(shown)
    return render(request, "hosts/_promotion_hosts.html", {"stage": stage, "definition": definition, "hosts": shown,
                                                           "hosts_count": count, "more": count - len(shown)})


@login_required
@require_GET
def stage_hosts(request, pk):
    """The hosts that follow a stage (assigned to it, or tracking its tag in one of the team's repositories): the first
    HOSTS_SHOWN, with the count and how many drift."""
    stage = get_stage_for_user(request.user, pk)
    definitions = ImageDefinition.objects.filter(team=stage.team)
    hosts = Host.objects.visible_to(request.user).filter(team=stage.team).following(
        [stage.reference(d) for d in definitions], stage=stage)
    shown = list(hosts.only("name", "state", "drifting", "booted_digest", "booted_version", "tracked_image",
                            "spec_image", "team_id").order_by("name", "id")[:HOSTS_SHOWN])
    if len(shown) < HOSTS_SHOWN:
        total, drifting = len(shown), sum(h.drifting for h in shown)
    else:
        counts = hosts.aggregate(total=Count("id"), drifting=Count("id", filter=Q(drifting=True)))
        total, drifting = counts["total"], counts["drifting"]
    return render(request, "hosts/_stage_hosts.html", {"stage": stage, "following_hosts": shown,
                                                       "following_count": total, "following_drifting": drifting})


@login_required
@require_GET
def release_map(request):
    """The dashboard's release map: the current team's definitions (or those of all the user's teams), the first
    MAP_DEFINITIONS by team and name. Nothing at all for someone who sees no definition (help-desk users)."""
    team = current_team(request)
    definitions = ImageDefinition.objects.visible_to(request.user).select_related("team").order_by("team__name", "name")
    if team is not None:
        definitions = definitions.filter(team=team)
    shown = list(definitions[:MAP_DEFINITIONS + 1])
    more = definitions.count() - MAP_DEFINITIONS if len(shown) > MAP_DEFINITIONS else 0
    return render(request, "hosts/_release_map.html", {
        "maps": releasemap.release_map(request.user, shown[:MAP_DEFINITIONS]), "more": more, "names": True,
        "refresh": MAP_REFRESH, "map_id": "release-map", "categories": releasemap.CATEGORIES})


@login_required
@require_GET
def definition_release_map(request, pk):
    """The release map of one definition, on its page."""
    definition = get_definition_for_user(request.user, pk)
    return render(request, "hosts/_release_map.html", {
        "maps": releasemap.release_map(request.user, [definition]), "more": 0, "names": False,
        "refresh": MAP_REFRESH, "map_id": "release-map", "categories": releasemap.CATEGORIES})
