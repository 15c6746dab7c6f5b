"""The seams between builds, disk images, promotions and hosts: each page links to what the others know about the same
digest, for the people who may see it, in a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from builds.diskimages.models import DiskImage
from builds.models import Build, ImageDefinition, Revision
from builds.releases.models import Promotion, StageHistory
from hosts.models import Host, HostState
from portal import services as portal_services
from portal.models import RunStatus
from tests.fragments import shown

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
REPOSITORY = "registry.example.com/platform/web-os"


def make_build(definition, revision, number, digest, *, team):
    run = portal_services.run_create(kind="build", title=f"build {number}", team=team)
    portal_services.run_finish(run, status=RunStatus.SUCCEEDED)
    return Build.objects.create(definition=definition, revision=revision, number=number, run=run, digest=digest,
                                repository=definition.repository, platform="linux/amd64")


def make_host(team, name, **fields):
    defaults = {"address": "127.0.0.1", "port": 1, "host_key": "ssh-ed25519 AAAA", "state": HostState.UP_TO_DATE,
                "is_bootc": True, "status_at": timezone.now()}
    return Host.objects.create(team=team, name=name, **{**defaults, **fields})


class World:
    """web-os with builds 1 (D1) and 2 (D2); dev and test hold D1; a promotion of D2 to test waits; a disk image of D1;
    hosts: two boot D1 following test, one boots D2 assigned to dev; another team's host boots D1 too."""

    def __init__(self, personas):
        team = personas.team
        self.personas = personas
        self.definition = ImageDefinition.objects.create(team=team, name="web-os", repository=REPOSITORY,
                                                         platforms=["linux/amd64"])
        revision = Revision.objects.create(definition=self.definition, number=1, containerfile="FROM x",
                                           sha256="0" * 64)
        self.build1 = make_build(self.definition, revision, 1, D1, team=team)
        self.build2 = make_build(self.definition, revision, 2, D2, team=team)
        self.dev, self.test, self.prod = (team.stages.get(name=n) for n in ("dev", "test", "prod"))
        for stage in (self.dev, self.test):
            StageHistory.objects.create(stage=stage, definition=self.definition, digest=D1, build=self.build1)
        self.promotion = Promotion.objects.create(definition=self.definition, build=self.build2, digest=D2,
                                                  target_stage=self.test, reason="ship 2",
                                                  requested_by=personas.developer)
        run = portal_services.run_create(kind="disk_image", title="qcow2", team=team)
        self.disk_image = DiskImage.objects.create(team=team, definition=self.definition, build=self.build1,
                                                   repository=REPOSITORY, digest=D1, types=["qcow2"],
                                                   architecture="amd64", builder_image="bib", run=run)
        self.web1 = make_host(team, "web-01", booted_digest=D1, tracked_image=f"{REPOSITORY}:test")
        self.web2 = make_host(team, "web-02", booted_digest=D1, spec_image=f"{REPOSITORY}:test")
        self.edge = make_host(team, "edge-01", booted_digest=D2, stage=self.dev, drifting=True,
                              state=HostState.DRIFT)
        self.foreign = make_host(personas.other_team, "theirs-01", booted_digest=D1,
                                 tracked_image=f"{REPOSITORY}:test")


@pytest.fixture
def world(personas):
    return World(personas)


def page(client_for, user, url):
    """The page as the browser shows it, with the fragments it loads (who runs this image comes from hosts)."""
    return shown(client_for(user), url)


class TestTheBuildPage:
    def test_it_offers_conversion_and_promotion_to_developers(self, world, client_for):
        html = page(client_for, world.personas.developer, world.build1.get_absolute_url())
        assert f"{reverse('diskimages:create')}?build={world.build1.pk}" in html
        assert f"{reverse('releases:promotion_create')}?build={world.build1.pk}" in html
        for url in (f"{reverse('diskimages:create')}?build={world.build1.pk}",
                    f"{reverse('releases:promotion_create')}?build={world.build1.pk}"):
            assert client_for(world.personas.developer).get(url).status_code == 200  # the links land on real forms

    def test_viewers_see_where_it_went_but_get_no_buttons(self, world, client_for):
        html = page(client_for, world.personas.viewer, world.build1.get_absolute_url())
        assert "Convert to disk image" not in html and "Request promotion" not in html
        assert world.dev.get_absolute_url() in html and world.test.get_absolute_url() in html
        assert world.prod.get_absolute_url() not in html  # prod does not hold it
        fragment = reverse("diskimages:digest_images", args=[D1])
        # Its disk images load as a fragment of their own app.
        assert fragment in client_for(world.personas.viewer).get(world.build1.get_absolute_url()).content.decode()
        assert world.disk_image.get_absolute_url() in html
        assert world.disk_image.get_absolute_url() in page(client_for, world.personas.viewer, fragment)
        assert world.disk_image.get_absolute_url() not in page(client_for, world.personas.outsider, fragment)
        # Two of the team's hosts boot D1; the other team's host is not counted.
        assert "2 hosts run this digest" in html and reverse("hosts:host_digest", args=[D1]) in html

    def test_it_lists_the_promotions_of_its_digest(self, world, client_for):
        html = page(client_for, world.personas.viewer, world.build2.get_absolute_url())
        assert world.promotion.get_absolute_url() in html and f"Promotion #{world.promotion.pk} to test" in html
        assert "1 host runs this digest" in html
        assert "None yet." in html  # no stage holds D2

    def test_a_build_without_a_digest_has_no_downstream(self, world, client_for, personas):
        world.build1.digest = ""
        world.build1.save()
        html = page(client_for, personas.developer, world.build1.get_absolute_url())
        assert "Where this image went" not in html and "Convert to disk image" not in html

    def test_outsiders_and_help_desk_get_404(self, world, client_for, personas):
        for user in (personas.outsider, personas.helpdesk):
            assert client_for(user).get(world.build1.get_absolute_url()).status_code == 404

    def test_its_queries_do_not_grow_with_what_it_links_to(self, world, client_for, personas):
        client = client_for(personas.viewer)
        client.get("/")  # the session's first request records its activity (portal/sessions.py): not counted here
        with CaptureQueriesContext(connection) as before:
            shown(client, world.build1.get_absolute_url())
        for i in range(4):
            StageHistory.objects.create(stage=world.prod, definition=world.definition, digest=D1, build=world.build1)
            make_host(personas.team, f"more-{i}", booted_digest=D1)
            run = portal_services.run_create(kind="disk_image", title="raw", team=personas.team)
            DiskImage.objects.create(team=personas.team, definition=world.definition, build=world.build1,
                                     repository=REPOSITORY, digest=D1, types=["raw"], architecture="amd64",
                                     builder_image="bib", run=run)
        with CaptureQueriesContext(connection) as after:
            html = shown(client, world.build1.get_absolute_url())
        assert "6 hosts run this digest" in html
        assert len(after) == len(before)


class TestTheDefinitionPage:
    def test_it_shows_what_each_stage_holds_and_who_follows_it(self, world, client_for, personas):
        html = page(client_for, personas.viewer, world.definition.get_absolute_url())
        assert 'id="stages"' in html
        assert f'{world.test.get_absolute_url()}#hosts">2 hosts follow <code>:test</code>' in html
        assert f'{world.dev.get_absolute_url()}#hosts">1 host follows <code>:dev</code>' not in html  # edge-01 is
        # assigned to dev but tracks no dev tag of web-os: it is counted on the stage page, not per image
        assert "Holds nothing yet." in html  # prod

    def test_who_runs_this_image_counts_the_teams_hosts_per_digest(self, world, client_for, personas):
        html = page(client_for, personas.viewer, world.definition.get_absolute_url())
        who = html[html.index('id="who-runs"'):]
        assert "3 hosts boot one of its digests" in who
        assert f'{reverse("hosts:host_digest", args=[D1])}">2 hosts</a>' in who
        assert f'{reverse("hosts:host_digest", args=[D2])}">1 host</a>' in who
        assert who.index(D1[:19]) < who.index(D2[:19])  # the most run first

    def test_with_no_host_it_says_what_will_appear(self, world, client_for, personas):
        Host.objects.all().delete()
        html = page(client_for, personas.viewer, world.definition.get_absolute_url())
        assert "No host boots a digest of web-os yet" in html

    def test_developers_are_offered_the_first_promotion(self, world, client_for, personas):
        StageHistory.objects.all().delete()
        html = page(client_for, personas.developer, world.definition.get_absolute_url())
        assert f"{reverse('releases:promotion_create')}?build={world.build2.pk}&amp;stage=dev" in html
        assert "Promote build #" not in page(client_for, personas.viewer, world.definition.get_absolute_url())

    def test_its_queries_do_not_grow_with_hosts_and_digests(self, world, client_for, personas):
        client = client_for(personas.viewer)
        client.get("/")  # the session's first request records its activity (portal/sessions.py): not counted here
        with CaptureQueriesContext(connection) as before:
            shown(client, world.definition.get_absolute_url())
        revision = world.definition.revisions.get()
        for i, digest in enumerate((D3, "sha256:" + "4" * 64, "sha256:" + "5" * 64)):
            make_build(world.definition, revision, 10 + i, digest, team=personas.team)
            make_host(personas.team, f"more-{i}", booted_digest=digest, tracked_image=f"{REPOSITORY}:prod")
        with CaptureQueriesContext(connection) as after:
            html = shown(client, world.definition.get_absolute_url())
        assert "6 hosts boot one of its digests" in html
        assert len(after) == len(before)


class TestTheHostPage:
    def test_it_links_its_stage_and_the_definition_and_build_of_its_digest(self, world, client_for, personas):
        world.edge.status = {"booted": {"image": {"image": f"{REPOSITORY}:dev", "digest": D2, "version": "2"}}}
        world.edge.save()
        html = page(client_for, personas.viewer, world.edge.get_absolute_url())
        assert f'href="{world.dev.get_absolute_url()}"' in html
        assert f'href="{world.definition.get_absolute_url()}"' in html
        assert f'href="{world.build2.get_absolute_url()}"' in html

    def test_help_desk_sees_the_host_but_no_links_into_the_team(self, world, client_for, personas):
        world.edge.status = {"booted": {"image": {"image": f"{REPOSITORY}:dev", "digest": D2, "version": "2"}}}
        world.edge.save()
        html = page(client_for, personas.helpdesk, world.edge.get_absolute_url())
        assert "dev" in html and world.dev.get_absolute_url() not in html
        assert world.definition.get_absolute_url() not in html and world.build2.get_absolute_url() not in html


class TestTheStagePage:
    def test_it_lists_the_hosts_following_the_stage(self, world, client_for, personas):
        html = page(client_for, personas.viewer, world.test.get_absolute_url())
        hosts = html[html.index('id="hosts"'):]
        assert world.web1.get_absolute_url() in hosts and world.web2.get_absolute_url() in hosts
        assert world.edge.get_absolute_url() not in hosts and "theirs-01" not in hosts
        dev = page(client_for, personas.viewer, world.dev.get_absolute_url())
        assert world.edge.get_absolute_url() in dev[dev.index('id="hosts"'):] and "1 drifting" in dev

    def test_an_empty_stage_says_what_will_appear(self, world, client_for, personas):
        assert "No host follows prod yet" in page(client_for, personas.viewer, world.prod.get_absolute_url())

    def test_many_hosts_are_counted_and_linked_not_all_listed(self, world, client_for, personas):
        for i in range(30):
            make_host(personas.team, f"bulk-{i:02d}", booted_digest=D1, stage=world.prod)
        html = page(client_for, personas.viewer, world.prod.get_absolute_url())
        assert "bulk-24" in html and "bulk-25" not in html
        assert "All 30 hosts of prod" in html

    def test_outsiders_get_404(self, world, client_for, personas):
        assert client_for(personas.outsider).get(world.test.get_absolute_url()).status_code == 404


class TestWhoRunsThisImageComesFromHosts:
    """Builds and release pages never import hosts: they load its fragments, which check access to the object they
    are about with that object's own helper."""

    def fragments(self, world):
        return [reverse("hosts:hosts_of_definition", args=[world.definition.pk]),
                reverse("hosts:hosts_following_definition", args=[world.definition.pk]),
                reverse("hosts:hosts_of_build", args=[world.build1.pk]),
                reverse("hosts:hosts_of_promotion", args=[world.promotion.pk]),
                reverse("hosts:hosts_of_stage", args=[world.test.pk])]

    def test_the_pages_load_the_hosts_fragments(self, world, client_for, personas):
        stages_fragment = reverse("releases:stages_of_definition", args=[world.definition.pk])
        for url, fragment in zip((world.definition.get_absolute_url(), stages_fragment, world.build1.get_absolute_url(),
                                  world.promotion.get_absolute_url(), world.test.get_absolute_url()),
                                 self.fragments(world), strict=True):
            html = client_for(personas.viewer).get(url).content.decode()
            assert f'hx-get="{fragment}" hx-trigger="load"' in html and f'href="{fragment}"' in html

    def test_only_those_who_see_the_object_get_its_fragment(self, world, client_for, personas):
        for url in self.fragments(world):
            assert client_for(None).get(url).status_code == 302
            assert client_for(personas.outsider).get(url).status_code == 404
            assert client_for(personas.helpdesk).get(url).status_code == 404  # they see hosts, not the team's builds
            assert client_for(personas.viewer).get(url).status_code == 200
