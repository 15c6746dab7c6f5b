"""The release map: each definition's stages as lanes with what each holds and a bar of the hosts that follow it by
state, on the dashboard and on the definition's page; who may see it, and its cost."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from builds.releases.models import StageHistory
from hosts.models import HostState
from hosts.releasemap import category, segments
from tests.fragments import shown
from tests.hosts.test_integration_links import D2, REPOSITORY, World, make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(personas):
    return World(personas)


def test_each_host_state_falls_in_one_part_of_the_bar():
    assert category(HostState.UP_TO_DATE, False) == "up_to_date"
    assert category(HostState.RUNNING, False) == "up_to_date"
    assert category(HostState.UPDATE_STAGED, False) == "staged"
    assert category(HostState.DRIFT, True) == "drifting"
    assert category(HostState.UP_TO_DATE, True) == "drifting"
    assert category(HostState.ROLLED_BACK, True) == "rolled_back"
    for state in (HostState.UNREACHABLE, HostState.AUTH_FAILED, HostState.HOST_KEY_CHANGED, HostState.UNREADABLE):
        assert category(state, False) == "unreachable"
    assert category(HostState.NEW, False) == "unknown"


def test_the_bar_parts_are_as_wide_as_their_share_and_follow_each_other():
    parts = segments({"unreachable": 1, "up_to_date": 3})
    assert [(p.key, p.n, p.x, p.width) for p in parts] == [("up_to_date", 3, "0.000", "75.000"),
                                                           ("unreachable", 1, "75.000", "25.000")]
    assert segments({}) == []


def test_the_definition_page_shows_its_lanes_with_what_each_stage_holds_and_its_hosts(client_for, world):
    make_host(world.personas.team, "web-03", booted_digest=D2, tracked_image=f"{REPOSITORY}:test",
              state=HostState.UPDATE_STAGED)
    make_host(world.personas.team, "web-04", tracked_image=f"{REPOSITORY}:test", state=HostState.UNREACHABLE)
    html = shown(client_for(world.personas.viewer), world.definition.get_absolute_url())
    assert "Release map" in html
    lanes = re.split(r'class="rm-lane[" ]', html)[1:]
    assert len(lanes) == 3  # dev, test, prod
    dev, test, prod = lanes
    assert ">dev<" in dev and "build 1" in dev and world.build1.get_absolute_url() in dev
    # test: two follow its tag as told or as reported, plus a staged and an unreachable one; not the other team's.
    assert "2 up to date" in test and "1 update staged" in test and "1 unreachable" in test
    assert 'aria-label="4 hosts follow test: 2 up to date, 1 update staged, 1 unreachable."' in test
    assert 'class="rm-up_to_date" x="0.000" y="0" width="50.000"' in test
    assert "nothing yet" in prod and "no hosts follow prod" in prod
    assert 'style="' not in html.split("Release map", 1)[1].split("</section>")[0]  # CSP: no inline styles


def test_the_dashboard_shows_the_map_of_the_users_images(client_for, world):
    html = shown(client_for(world.personas.viewer), reverse("portal:dashboard"))
    assert "Release map" in html and ">web-os</a>" in html


def test_who_sees_the_release_map(client_for, world):
    p = world.personas
    of_definition = reverse("hosts:release_map_of_definition", args=[world.definition.pk])
    of_dashboard = reverse("hosts:release_map")
    for url in (of_definition, of_dashboard):
        response = client_for(None).get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
        assert client_for(p.viewer).post(url).status_code == 405
    for user in (p.outsider, p.helpdesk):
        assert client_for(user).get(of_definition).status_code == 404, user
        body = client_for(user).get(of_dashboard).content.decode()
        assert "web-os" not in body and "Release map" not in body, user
    for user in (p.viewer, p.developer, p.admin):
        assert "Release map" in client_for(user).get(of_definition).content.decode(), user
        assert "web-os" in client_for(user).get(of_dashboard).content.decode(), user


def test_the_map_costs_the_same_queries_whatever_the_number_of_hosts(client_for, world):
    client = client_for(world.personas.viewer)
    url = reverse("hosts:release_map")

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    queries()  # the session's and the user's first reads
    before = queries()
    for n in range(20):
        make_host(world.personas.team, f"more-{n}", tracked_image=f"{REPOSITORY}:{('dev', 'test', 'prod')[n % 3]}",
                  state=(HostState.UP_TO_DATE, HostState.DRIFT, HostState.ROLLED_BACK)[n % 3])
    assert queries() == before


def test_a_lane_lists_the_promotions_on_their_way_into_it_and_says_which_would_move_it_back(client_for, world):
    from builds.releases.models import Promotion, PromotionStatus

    # The world's request puts build 2 into test (which holds build 1); one into dev would take dev back to build 1.
    StageHistory.objects.create(stage=world.dev, definition=world.definition, digest=D2, build=world.build2)
    back = Promotion.objects.create(definition=world.definition, build=world.build1, digest=world.build1.digest,
                                    target_stage=world.dev, reason="2 broke", requested_by=world.personas.developer)
    Promotion.objects.create(definition=world.definition, build=world.build2, digest=D2, target_stage=world.prod,
                             reason="old", requested_by=world.personas.developer, status=PromotionStatus.REJECTED)
    html = shown(client_for(world.personas.viewer), world.definition.get_absolute_url())
    dev, test, prod = re.split(r'class="rm-lane[" ]', html)[1:]
    assert world.promotion.get_absolute_url() in test and "build 2</a>" in test
    assert "waiting for approval" in test and "would move test back" not in test
    assert back.get_absolute_url() in dev and "would move dev back" in dev
    assert "rm-on-the-way" not in prod  # a rejected request is history, not on its way
