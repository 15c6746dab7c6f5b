"""What the stages hold, on the builds pages: the builds app never reads releases, so a definition's page and a build's
page load the releases app's fragments (builds/releases/fragments.py), which check access with the builds object's own
helper and read in a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from builds.models import Build, ImageDefinition, Revision
from builds.releases.models import Promotion, StageHistory
from portal import services as portal_services
from portal.models import RunStatus
from tests.fragments import shown

pytestmark = pytest.mark.django_db

D1, D2 = ("sha256:" + c * 64 for c in "12")


def make_build(definition, revision, number, digest):
    run = portal_services.run_create(kind="build", title=f"build {number}", team=definition.team)
    portal_services.run_finish(run, status=RunStatus.SUCCEEDED)
    return Build.objects.create(definition=definition, revision=revision, number=number, run=run, digest=digest,
                                repository=definition.repository, platform="linux/amd64")


class World:
    """web-os with builds 1 (D1) and 2 (D2); dev holds D1; a promotion of D2 to test waits."""

    def __init__(self, personas):
        team = personas.team
        self.definition = ImageDefinition.objects.create(team=team, name="web-os", platforms=["linux/amd64"],
                                                         repository="registry.example.com/platform/web-os")
        revision = Revision.objects.create(definition=self.definition, number=1, containerfile="FROM x",
                                           sha256="0" * 64)
        self.build1 = make_build(self.definition, revision, 1, D1)
        self.build2 = make_build(self.definition, revision, 2, D2)
        self.dev, self.test, self.prod = (team.stages.get(name=n) for n in ("dev", "test", "prod"))
        StageHistory.objects.create(stage=self.dev, definition=self.definition, digest=D1, build=self.build1)
        self.promotion = Promotion.objects.create(definition=self.definition, build=self.build2, digest=D2,
                                                  target_stage=self.test, reason="ship 2",
                                                  requested_by=personas.developer)

    def fragments(self):
        return [reverse("releases:stages_of_definition", args=[self.definition.pk]),
                reverse("releases:stages_of_build", args=[self.build1.pk])]


@pytest.fixture
def world(personas):
    return World(personas)


def test_the_builds_pages_load_the_stages_fragments(world, client_for, personas):
    for url, fragment in zip((world.definition.get_absolute_url(), world.build1.get_absolute_url()), world.fragments(),
                             strict=True):
        html = client_for(personas.viewer).get(url).content.decode()
        assert f'hx-get="{fragment}" hx-trigger="load"' in html and f'href="{fragment}"' in html


def test_only_those_who_see_the_object_get_its_fragment(world, client_for, personas):
    for url in world.fragments():
        assert client_for(None).get(url).status_code == 302
        assert client_for(personas.outsider).get(url).status_code == 404
        assert client_for(personas.helpdesk).get(url).status_code == 404  # they see hosts, not the team's builds
        assert client_for(personas.viewer).get(url).status_code == 200
        assert client_for(personas.viewer).post(url).status_code == 405


def test_the_definition_page_shows_what_each_stage_holds(world, client_for, personas):
    html = shown(client_for(personas.viewer), world.definition.get_absolute_url())
    stages = html[html.index('id="stages"'):]
    assert world.dev.get_absolute_url() in stages and world.build1.get_absolute_url() in stages
    assert "Holds nothing yet." in stages and "Promote build #" not in stages  # test and prod; viewers get no link


def test_developers_are_offered_the_first_promotion(world, client_for, personas):
    StageHistory.objects.all().delete()
    html = shown(client_for(personas.developer), world.definition.get_absolute_url())
    assert f"{reverse('releases:promotion_create')}?build={world.build2.pk}&amp;stage=dev" in html


def test_the_stage_list_loads_how_many_hosts_follow_each_stage(world, client_for, personas):
    fragment = client_for(personas.viewer).get(world.fragments()[0]).content.decode()
    following = reverse("hosts:hosts_following_definition", args=[world.definition.pk])
    assert f'hx-get="{following}" hx-trigger="load"' in fragment
    for stage in (world.dev, world.test, world.prod):
        assert f'id="stage-following-{stage.pk}"' in fragment


def test_the_build_page_shows_the_stages_holding_its_digest_and_its_promotions(world, client_for, personas):
    html = shown(client_for(personas.viewer), world.build1.get_absolute_url())
    assert world.dev.get_absolute_url() in html and world.test.get_absolute_url() not in html
    assert "Hosts tracking dev pick it up at their next upgrade." in html
    html = shown(client_for(personas.viewer), world.build2.get_absolute_url())
    assert f"Promotion #{world.promotion.pk} to test" in html and "None yet." in html


def test_its_queries_do_not_grow_with_stages_and_promotions(world, client_for, personas):
    client = client_for(personas.viewer)
    client.get("/")  # the session's first request records its activity (portal/sessions.py): not counted here
    with CaptureQueriesContext(connection) as before:
        shown(client, world.build1.get_absolute_url())
    for stage in (world.test, world.prod):
        StageHistory.objects.create(stage=stage, definition=world.definition, digest=D1, build=world.build1)
        Promotion.objects.create(definition=world.definition, build=world.build1, digest=D1, target_stage=stage,
                                 reason="again", requested_by=personas.developer)
    with CaptureQueriesContext(connection) as after:
        html = shown(client, world.build1.get_absolute_url())
    assert world.prod.get_absolute_url() in html
    assert len(after) == len(before)
