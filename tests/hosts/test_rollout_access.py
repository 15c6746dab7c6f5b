"""Who may see and do what with rollouts: every page, fragment, control and the rollout's log websocket, for anonymous
users, an outsider (another team), read-only users (a viewer; help-desk, who reads every team's host state) and the
roles allowed to act (operators run rollouts, team admins change a stage's policy)."""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from builds.models import Build
from builds.releases.models import Promotion, PromotionStatus, Stage
from hosts.models import Host
from hosts.rollouts import services
from hosts.rollouts.models import Rollout, RolloutHost, RolloutStatus
from portal.asgi import application
from portal.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from tests.diskimages.rows import succeeded_build

DIGEST = "sha256:" + "1" * 64
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def make_rollout(personas):
    stage, _ = Stage.objects.get_or_create(team=personas.team, name="prod", defaults={"position": 2})
    for i in range(3):
        Host.objects.create(team=personas.team, name=f"web-{i}", address="127.0.0.1", stage=stage, host_key=KEY,
                            tracked_image="registry.example.com/platform/web-os:prod")
    return services.rollout_start(stage=stage, reference="registry.example.com/platform/web-os:prod", digest=DIGEST,
                                  user=personas.operator)


@pytest.fixture
def rollout(personas):
    return make_rollout(personas)


def status(client, method, url, **extra):
    response = getattr(client, method)(url, **extra)
    return response.status_code


READERS = ("viewer", "helpdesk", "operator")


@pytest.mark.django_db
class TestPages:
    def test_the_rollout_page_and_its_live_fragment(self, client_for, personas, rollout):
        url = rollout.get_absolute_url()
        assert status(client_for(None), "get", url) == 302
        assert status(client_for(personas.outsider), "get", url) == 404
        assert status(client_for(personas.outsider), "get", url, HTTP_HX_REQUEST="true") == 404
        for who in READERS:
            page = client_for(getattr(personas, who)).get(url)
            assert page.status_code == 200, who
            text = page.content.decode()
            assert 'id="rollout-live"' in text and "0/3 updated · 3 waiting" in text
            fragment = client_for(getattr(personas, who)).get(url, HTTP_HX_REQUEST="true").content.decode()
            assert fragment.lstrip().startswith("{%") is False and 'id="rollout-live"' in fragment
            assert "<html" not in fragment
        operator_page = client_for(personas.operator).get(url).content.decode()
        assert "Abort and roll back" in operator_page
        for who in ("viewer", "helpdesk"):
            assert "Abort and roll back" not in client_for(getattr(personas, who)).get(url).content.decode()

    def test_the_fleet_view_shows_the_rollouts_under_way_and_how_many_hosts_are_on_their_target(
            self, client_for, personas, rollout):
        Host.objects.filter(name="web-0").update(booted_digest=DIGEST)
        Host.objects.filter(name="web-1").update(staged_digest=DIGEST)
        url = "/rollouts/of/fleet/"
        assert 'hx-get="/rollouts/of/fleet/"' in client_for(personas.viewer).get("/hosts/fleet/").content.decode()
        assert status(client_for(None), "get", url) == 302
        outsider = client_for(personas.outsider).get(url)
        assert outsider.status_code == 200 and f"#{rollout.pk}" not in outsider.content.decode()
        for who in READERS:
            text = client_for(getattr(personas, who)).get(url, HTTP_HX_REQUEST="true").content.decode()
            assert f'href="/rollouts/{rollout.pk}/">#{rollout.pk}</a>' in text, who
            assert '<span class="fw-semibold">1</span>/3</td>' in text and '<td class="text-end">1</td>' in text, who

    def test_the_host_list_links_the_rollouts(self, client_for, personas, rollout):
        assert 'href="/rollouts/"' in client_for(personas.viewer).get("/hosts/").content.decode()

    def test_the_list_shows_each_user_the_rollouts_they_may_read(self, client_for, personas, rollout):
        assert status(client_for(None), "get", "/rollouts/") == 302
        assert f"#{rollout.pk}" not in client_for(personas.outsider).get("/rollouts/").content.decode()
        for who in READERS:
            assert f"#{rollout.pk}</a>" in client_for(getattr(personas, who)).get("/rollouts/").content.decode(), who

    def test_the_policy_page_reads_for_members_and_help_desk_and_saves_for_admins_only(self, client_for, personas,
                                                                                        rollout):
        url = f"/rollouts/policies/{rollout.stage_id}/"
        assert status(client_for(None), "get", url) == 302
        assert status(client_for(personas.outsider), "get", url) == 404
        for who in ("viewer", "helpdesk", "operator", "admin"):
            assert status(client_for(getattr(personas, who)), "get", url) == 200, who
        form = {"max_failed_percent": "10", "soak_seconds": "0", "budget_label": "site", "window_timezone": "UTC",
                "windows": "Mon-Fri 22:00-04:00"}
        assert status(client_for(None), "post", url, data=form) == 302
        assert status(client_for(personas.outsider), "post", url, data=form) == 404
        for who in ("viewer", "helpdesk", "operator"):
            assert status(client_for(getattr(personas, who)), "post", url, data=form) == 403, who
        assert status(client_for(personas.admin), "post", url, data=form) == 302
        policy = services.policy_for(rollout.stage)
        assert policy.max_failed_percent == 10 and policy.as_data()["windows"] == [
            {"weekdays": [0, 1, 2, 3, 4], "starts": "22:00", "ends": "04:00"}]

    def test_a_policy_that_can_never_finish_is_refused_on_the_page_with_the_reason(self, client_for, personas,
                                                                                   rollout):
        url = f"/rollouts/policies/{rollout.stage_id}/"
        page = client_for(personas.admin).post(url, data={"max_failed_percent": "10", "soak_seconds": "0",
                                                           "window_timezone": "UTC", "max_updating_per_group": "0"})
        assert page.status_code == 200 and "lets no host through" in page.content.decode()
        page = client_for(personas.admin).post(url, data={"max_failed_percent": "10", "soak_seconds": "0",
                                                           "window_timezone": "UTC", "windows": "Someday 1-2"})
        assert page.status_code == 200 and "write a window as days and hours" in page.content.decode()

    def test_the_start_form_is_for_operators(self, client_for, personas, rollout):
        Rollout.objects.filter(pk=rollout.pk).update(status=RolloutStatus.ABORTED)
        RolloutHost.objects.filter(rollout=rollout).update(active=False)  # what the engine does as it ends
        url = f"/rollouts/policies/{rollout.stage_id}/start/"
        data = {"reference": rollout.reference, "digest": "sha256:" + "2" * 64}
        assert status(client_for(None), "get", url) == 302
        assert status(client_for(personas.outsider), "get", url) == 404
        for who in ("viewer", "helpdesk"):
            assert status(client_for(getattr(personas, who)), "get", url) == 403, who
            assert status(client_for(getattr(personas, who)), "post", url, data=data) == 403, who
        assert status(client_for(personas.operator), "get", url) == 200
        response = client_for(personas.operator).post(url, data=data)
        started = Rollout.objects.exclude(pk=rollout.pk).get()
        assert response.status_code == 302 and response["Location"] == started.get_absolute_url()

    def test_a_bad_digest_is_refused_with_a_message(self, client_for, personas, rollout):
        url = f"/rollouts/policies/{rollout.stage_id}/start/"
        page = client_for(personas.operator).post(url, data={"reference": rollout.reference, "digest": "latest"})
        assert page.status_code == 200 and "A digest is sha256: and 64 hex digits." in page.content.decode()


@pytest.mark.django_db
class TestControls:
    @pytest.mark.parametrize("control", ["pause", "abort"])
    def test_only_operators_pause_and_abort(self, client_for, personas, rollout, control):
        url = f"/rollouts/{rollout.pk}/{control}/"
        assert status(client_for(None), "post", url) == 302
        assert status(client_for(personas.outsider), "post", url) == 404
        for who in ("viewer", "helpdesk"):
            assert status(client_for(getattr(personas, who)), "post", url) == 403, who
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.RUNNING
        assert status(client_for(personas.operator), "get", url) == 405
        assert status(client_for(personas.operator), "post", url) == 302
        rollout.refresh_from_db()
        assert rollout.status == {"pause": RolloutStatus.PAUSED, "abort": RolloutStatus.ABORTING}[control]

    def test_resume_and_abort_with_rollback(self, client_for, personas, rollout):
        services.rollout_pause(rollout=rollout, user=personas.operator)
        url = f"/rollouts/{rollout.pk}/resume/"
        for who, code in ((None, 302), ("outsider", 404), ("viewer", 403), ("helpdesk", 403), ("operator", 302)):
            assert status(client_for(getattr(personas, who) if who else None), "post", url) == code, who
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.RUNNING
        client_for(personas.operator).post(f"/rollouts/{rollout.pk}/abort/", data={"rollback": "1"})
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.ABORTING and rollout.abort_with_rollback

    def test_a_control_that_does_not_apply_says_why(self, client_for, personas, rollout):
        response = client_for(personas.operator).post(f"/rollouts/{rollout.pk}/resume/", follow=True)
        assert "is running: it cannot be resumed" in response.content.decode()


@pytest.mark.django_db
class TestThePromotionCard:
    def test_links_its_rollout_for_whoever_may_see_the_promotion(self, client_for, personas, rollout):
        build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
        promotion = Promotion.objects.create(definition=build.definition, build=Build.objects.get(pk=build.pk),
                                             digest=DIGEST, target_stage=rollout.stage, reason="r",
                                             status=PromotionStatus.APPLIED)
        Rollout.objects.filter(pk=rollout.pk).update(promotion=promotion)
        url = f"/rollouts/of/promotions/{promotion.pk}/"
        assert status(client_for(None), "get", url) == 302
        assert status(client_for(personas.outsider), "get", url) == 404
        for who in ("viewer", "operator"):
            assert f"Rollout #{rollout.pk}" in client_for(getattr(personas, who)).get(url).content.decode(), who


@pytest.fixture
def a_channel_layer_of_the_tests_own():
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


async def close_or_status(run_id, user):
    comm = WebsocketCommunicator(application, f"/ws/runs/{run_id}/",
                                 headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    comm.scope["user"] = user
    connected, _ = await comm.connect()
    assert connected
    message = await comm.receive_output(timeout=5)
    await comm.disconnect()
    return message.get("code") if message["type"] == "websocket.close" else "open"


@pytest.mark.django_db(transaction=True)
async def test_the_rollouts_live_log_websocket(personas, a_channel_layer_of_the_tests_own):
    rollout = await sync_to_async(make_rollout)(personas)
    assert await close_or_status(rollout.run_id, AnonymousUser()) == CLOSE_UNAUTHENTICATED
    assert await close_or_status(rollout.run_id, personas.outsider) == CLOSE_NOT_FOUND
    for who in ("viewer", "helpdesk", "operator"):
        assert await close_or_status(rollout.run_id, getattr(personas, who)) == "open", who


@pytest.mark.django_db
def test_the_host_page_says_how_the_host_is_updated_and_links_its_rollouts(client_for, personas, rollout):
    host = Host.objects.get(team=personas.team, name="web-0")
    url = f"/rollouts/of/hosts/{host.pk}/"
    assert status(client_for(None), "get", url) == 302
    assert status(client_for(personas.outsider), "get", url) == 404
    for who in READERS:
        text = client_for(getattr(personas, who)).get(url).content.decode()
        assert "Updated by bootc's own timer" in text and f"#{rollout.pk}</a>: waiting" in text, who
    services.policy_save(stage=rollout.stage, user=personas.admin, fields={"follow_automatically": True}, windows=[])
    assert "Follows prod automatically" in client_for(personas.viewer).get(url).content.decode()
    assert url in client_for(personas.viewer).get(host.get_absolute_url()).content.decode()
