"""The REST API of hosts against the simulated fleet: what each kind of user reads (anonymous, outsider, help desk,
viewer), actions only for operators with the `operate` scope, through the same service as the host page's buttons,
and bad input answered with a problem document that names the field."""

import json

import pytest

from hosts import actions
from hosts.models import ActionKind, HostAction
from tests.api.fixtures import problem

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("helpdesk", 200), ("viewer", 200),
                                         ("operator", 200)])
def test_a_host_reads_like_its_page_for_each_kind_of_user(prod_host, personas, api_as, demo_images, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read").get(f"hosts/{prod_host.pk}/")
    assert response.status_code == status
    if status == 200:
        digests, _ = demo_images
        body = response.json()
        assert (body["name"], body["team"], body["state"], body["drifting"]) == (
            "web-01", personas.team.slug, "drift", True)
        assert body["booted_digest"] == digests["1.0"]["amd64"]
        assert body["expected_digest"] == digests["1.1"]["amd64"]


def test_the_status_and_the_timeline_read_as_the_host_reported(prod_host, personas, api_as):
    api = api_as(personas.viewer, "read")
    status = api.get(f"hosts/{prod_host.pk}/status/").json()
    assert status["status"] == prod_host.status and prod_host.booted_digest in json.dumps(status["status"])
    events = api.get(f"hosts/{prod_host.pk}/timeline/").json()["items"]
    assert {"first_seen", "host_key_confirmed"} <= {e["kind"] for e in events}
    first_seen = [e for e in events if e["kind"] == "first_seen"]
    assert api.get(f"hosts/{prod_host.pk}/timeline/", {"kind": "first_seen"}).json()["items"] == first_seen
    problem(api_as(personas.outsider, "read").get(f"hosts/{prod_host.pk}/timeline/"), 404)


def test_the_list_filters_as_the_page_does(prod_host, personas, api_as):
    api = api_as(personas.viewer, "read")
    assert [h["name"] for h in api.get("hosts/").json()["items"]] == ["web-01"]
    assert [h["name"] for h in api.get("hosts/", {"state": "drift"}).json()["items"]] == ["web-01"]
    assert api.get("hosts/", {"state": "up_to_date"}).json()["items"] == []
    assert [h["name"] for h in api.get("hosts/", {"q": "web"}).json()["items"]] == ["web-01"]
    assert [h["name"] for h in api.get("hosts/", {"name": "web-01", "drifting": "true"}).json()["items"]] == ["web-01"]
    assert api_as(personas.outsider, "read").get("hosts/").json()["items"] == []
    assert [h["name"] for h in api_as(personas.helpdesk, "read").get("hosts/").json()["items"]] == ["web-01"]
    problem(api.get("hosts/", {"state": "sideways"}), 400)


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("helpdesk", 403), ("viewer", 403),
                                         ("developer", 403), ("operator", 201)])
def test_only_operators_act_on_a_host(prod_host, personas, api_as, who, status, django_capture_on_commit_callbacks):
    user = None if who == "anonymous" else getattr(personas, who)
    with django_capture_on_commit_callbacks(execute=False):
        response = api_as(user, "read", "operate").post(f"hosts/{prod_host.pk}/actions/", {"kind": "upgrade_check"})
    assert response.status_code == status, response.content
    assert HostAction.objects.count() == (1 if status == 201 else 0)
    if status == 201:
        body = response.json()
        action = HostAction.objects.get()
        assert (body["id"], body["kind"], body["status"], body["run"]) == (action.pk, "upgrade_check", "queued",
                                                                           action.run_id)
        assert body["requested_by"] == "operator"


def test_acting_needs_the_operate_scope(prod_host, personas, api_as):
    body = problem(api_as(personas.operator, "read").post(f"hosts/{prod_host.pk}/actions/", {"kind": "reboot"}), 403)
    assert body["missing_scope"] == "operate"
    assert not HostAction.objects.exists()


def test_an_action_through_the_api_runs_and_is_read_back(prod_host, personas, api_as, demo_images):
    api = api_as(personas.operator, "read", "operate")
    created = api.post(f"hosts/{prod_host.pk}/actions/", {"kind": "upgrade_stage"}).json()
    actions.host_action_execute(created["id"])  # what the hosts worker does with it
    done = api.get(f"host-actions/{created['id']}/").json()
    assert done["status"] == "succeeded", done
    digests, _ = demo_images
    assert api.get(f"hosts/{prod_host.pk}/").json()["staged_digest"] == digests["1.1"]["amd64"]
    assert [a["id"] for a in api.get(f"hosts/{prod_host.pk}/actions/").json()["items"]] == [created["id"]]
    problem(api_as(personas.outsider, "read").get(f"host-actions/{created['id']}/"), 404)


@pytest.mark.parametrize("body, field", [
    ({"kind": "explode"}, "body.kind"),
    ({"kind": "switch", "image": "not an image"}, "body.image"),
    ({"kind": "reboot", "when": "now"}, "body.when"),
    ({}, "body.kind"),
])
def test_bad_actions_name_the_field_and_start_nothing(prod_host, personas, api_as, body, field):
    answer = problem(api_as(personas.operator, "operate").post(f"hosts/{prod_host.pk}/actions/", body), 400)
    assert answer["errors"][0]["field"] == field
    assert not HostAction.objects.exists()


def test_a_second_action_while_one_runs_is_a_conflict(prod_host, personas, api_as,
                                                       django_capture_on_commit_callbacks):
    api = api_as(personas.operator, "operate")
    with django_capture_on_commit_callbacks(execute=False):
        assert api.post(f"hosts/{prod_host.pk}/actions/", {"kind": ActionKind.UPGRADE_CHECK}).status_code == 201
        body = problem(api.post(f"hosts/{prod_host.pk}/actions/", {"kind": ActionKind.REBOOT}), 409)
    assert "busy" in body["detail"]
    assert HostAction.objects.count() == 1


def test_a_switch_outside_the_team_s_repositories_is_refused(prod_host, personas, api_as):
    body = problem(api_as(personas.operator, "operate").post(
        f"hosts/{prod_host.pk}/actions/", {"kind": "switch", "image": "quay.io/someone/else:latest"}), 409)
    assert "not an image of" in body["detail"]
    assert not HostAction.objects.exists()
