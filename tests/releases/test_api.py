"""The REST API of releases: stages, promotion requests, approvals and rollbacks, through the same gate as the pages:
who may see and do what (anonymous, outsider, read-only, allowed), the scope each needs, the self-approval and
second-factor rules for tokens, and bad input answered with a problem document that names the field."""

import pytest

from builds.releases.models import Approval, Promotion, PromotionKind, PromotionStatus
from tests.api.fixtures import ApiClient, problem

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stages_that_take_any_build(promo):
    """Test and prod take builds that were never in the stage before (a test that wants the rule turns it on)."""
    promo.team.stages.update(require_previous_stage=False)


def request_body(promo, build=2, stage="test", **extra):
    return {"definition": f"{promo.team.slug}/{promo.definition.name}", "stage": stage,
            "build": promo.builds[build - 1].pk, "reason": "ship it", **extra}


def pending(promo, *, build=2, stage="test", user=None):
    """A request waiting for approval, made through the service as the page makes it."""
    return promo.promote(promo.builds[build - 1], stage, user=user, apply=False)


# --- Reading ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("helpdesk", 404), ("viewer", 200),
                                         ("approver", 200)])
def test_a_promotion_reads_like_its_page_for_each_kind_of_user(promo, personas, api_as, who, status):
    promotion = pending(promo)
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read").get(f"promotions/{promotion.pk}/")
    assert response.status_code == status
    if status == 200:
        body = response.json()
        assert (body["id"], body["status"], body["stage"], body["digest"]) == (
            promotion.pk, "pending", "test", promo.builds[1].digest)
        assert body["definition"] == f"{promo.team.slug}/web-os" and body["approvals_needed"] == 1
        assert body["requested_by"] == "developer" and body["approvals"] == []


def test_the_list_filters_as_the_page_does_and_shows_no_other_team(promo, personas, api_as):
    first = pending(promo, build=2, stage="test")
    second = pending(promo, build=3, stage="prod")
    api = api_as(personas.viewer, "read")
    assert [p["id"] for p in api.get("promotions/").json()["items"]] == [second.pk, first.pk]
    assert [p["id"] for p in api.get("promotions/", {"stage": "prod"}).json()["items"]] == [second.pk]
    assert [p["id"] for p in api.get("promotions/", {"status": "applied"}).json()["items"]] == []
    assert [p["id"] for p in api.get("promotions/", {"q": f"#{first.pk}"}).json()["items"]] == [first.pk]
    assert api_as(personas.outsider, "read").get("promotions/").json()["items"] == []
    waiting = api_as(personas.approver, "read").get("promotions/", {"waiting_for_me": "true"}).json()["items"]
    assert {p["id"] for p in waiting} == {first.pk, second.pk}
    problem(api.get("promotions/", {"status": "finished"}), 400)


def test_stages_say_their_policy_and_what_they_hold(promo, personas, api_as):
    promo.push()
    promo.promote(promo.builds[0], "dev")
    stages = api_as(personas.viewer, "read").get("stages/", {"team": promo.team.slug}).json()["items"]
    by_name = {s["name"]: s for s in stages}
    assert {n: s["required_approvals"] for n, s in by_name.items()} == {"dev": 0, "test": 1, "prod": 2}
    assert by_name["dev"]["holds"] == [{"definition": f"{promo.team.slug}/web-os", "digest": promo.builds[0].digest,
                                        "build": promo.builds[0].pk, "applied_at": by_name["dev"]["holds"][0]["applied_at"],
                                        "pinned": False}]
    assert by_name["prod"]["holds"] == []
    problem(api_as(personas.outsider, "read").get(f"stages/{by_name['dev']['id']}/"), 404)


# --- Requesting ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 400), ("viewer", 403), ("operator", 403),
                                         ("developer", 201)])
def test_only_developers_of_the_team_ask_for_promotions(promo, personas, api_as, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read", "promote").post("promotions/", request_body(promo))
    assert response.status_code == status, response.content
    assert Promotion.objects.count() == (1 if status == 201 else 0)
    if status == 201:
        body = response.json()
        assert (body["status"], body["build"], body["kind"], body["requested_by"]) == (
            "pending", promo.builds[1].pk, "promote", "developer")


def test_asking_needs_the_promote_scope_and_says_so(promo, personas, api_as):
    body = problem(api_as(personas.developer, "read", "build").post("promotions/", request_body(promo)), 403)
    assert body["missing_scope"] == "promote"
    assert not Promotion.objects.exists()


def test_a_digest_names_the_build_as_well_as_its_id(promo, personas, api_as):
    body = request_body(promo)
    del body["build"]
    body["digest"] = promo.builds[1].digest
    response = api_as(personas.developer, "promote").post("promotions/", body)
    assert response.status_code == 201 and response.json()["build"] == promo.builds[1].pk


@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "body.colour"),
    ({"build": "two"}, "body.build"),
    ({"reason": ""}, "body.reason"),
    ({"stage": "staging"}, "body.stage"),
    ({"definition": "platform/no-such-os"}, "body.definition"),
    ({"digest": "sha256:" + "0" * 64}, "body.build"),
])
def test_bad_requests_name_the_field_and_write_nothing(promo, personas, api_as, change, field):
    body = problem(api_as(personas.developer, "promote").post("promotions/", {**request_body(promo), **change}), 400)
    assert body["errors"][0]["field"] == field, body
    assert field in body["detail"]
    assert not Promotion.objects.exists()


def test_a_refusal_of_the_gate_is_a_400_with_its_reason(promo, personas, api_as):
    promo.team.stages.filter(name="prod").update(require_previous_stage=True)
    body = problem(api_as(personas.developer, "promote").post("promotions/", request_body(promo, stage="prod")), 400)
    assert "has not been in test yet" in body["detail"]
    assert not Promotion.objects.exists()


def test_moving_a_stage_without_approvals_back_takes_its_name_in_confirm(promo, personas, api_as):
    from builds.releases.models import StageHistory

    promo.team.stages.filter(name="dev").update(required_approvals=0, require_previous_stage=False)
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[2].digest,
                                build=promo.builds[2])
    api = api_as(personas.developer, "promote")
    body = problem(api.post("promotions/", request_body(promo, build=1, stage="dev")), 400)
    assert "would move dev back from build 3 to build 1 at once" in body["detail"] and "type “dev”" in body["detail"]
    assert not Promotion.objects.exists()
    response = api.post("promotions/", request_body(promo, build=1, stage="dev", confirm="dev"))
    assert response.status_code == 201 and response.json()["build"] == promo.builds[0].pk


def test_a_body_that_is_not_json_is_a_400(promo, personas, make_token):
    response = ApiClient(make_token(personas.developer, "promote")).post("promotions/", "{not json")
    problem(response, 400)


def test_another_team_s_definition_cannot_be_asked_for(promo, personas, api_as):
    body = problem(api_as(personas.outsider, "promote").post("promotions/", request_body(promo)), 400)
    assert body["errors"][0]["field"] == "body.definition"


# --- Deciding --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("viewer", 403), ("developer", 403),
                                         ("approver", 200)])
def test_approving_as_the_token_s_user_follows_the_gate(promo, personas, api_as, who, status):
    promotion = pending(promo)
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read", "approve").post(f"promotions/{promotion.pk}/approve/",
                                                   {"digest": promotion.digest, "comment": "looks good"})
    assert response.status_code == status, response.content
    approvals = Approval.objects.filter(promotion=promotion)
    if status == 200:
        assert [(a.approver, a.comment) for a in approvals] == [(personas.approver, "looks good")]
        assert response.json()["approvals"][0]["approver"] == "approver"
        assert response.json()["status"] in ("approved", "applying", "failed")
    else:
        assert not approvals.exists()


def test_a_requester_may_not_approve_their_own_request_through_the_api(promo, personas, api_as):
    promotion = pending(promo, user=personas.approver)
    body = problem(api_as(personas.approver, "approve").post(f"promotions/{promotion.pk}/approve/",
                                                             {"digest": promotion.digest}), 403)
    assert "ask" in body["detail"].lower() or "request" in body["detail"].lower()
    assert not Approval.objects.exists()
    assert api_as(personas.approver2, "approve").post(f"promotions/{promotion.pk}/approve/",
                                                      {"digest": promotion.digest}).status_code == 200


def test_approving_needs_the_approve_scope(promo, personas, api_as):
    promotion = pending(promo)
    body = problem(api_as(personas.approver, "read", "promote").post(f"promotions/{promotion.pk}/approve/",
                                                                      {"digest": promotion.digest}), 403)
    assert body["missing_scope"] == "approve"


def test_a_team_token_cannot_approve(promo, personas, api_as):
    promotion = pending(promo)
    api = api_as(personas.admin, "read", "promote", team=personas.team)
    body = problem(api.post(f"promotions/{promotion.pk}/approve/", {"digest": promotion.digest}), 403)
    assert body["missing_scope"] == "approve"


def test_a_team_that_wants_a_second_factor_takes_approvals_only_from_tokens_made_with_one(promo, personas,
                                                                                             make_token):
    promotion = pending(promo)
    plain = make_token(personas.approver, "read", "approve")
    verified = make_token(personas.approver, "read", "approve", verified=True)
    personas.team.require_two_factor = True
    personas.team.save()
    body = problem(ApiClient(plain).post(f"promotions/{promotion.pk}/approve/", {"digest": promotion.digest}), 403)
    assert "second factor" in body["detail"]
    assert not Approval.objects.exists()
    response = ApiClient(verified).post(f"promotions/{promotion.pk}/approve/", {"digest": promotion.digest})
    assert response.status_code == 200, response.content


def test_approving_another_digest_than_the_request_s_is_a_conflict(promo, personas, api_as):
    promotion = pending(promo)
    body = problem(api_as(personas.approver, "approve").post(f"promotions/{promotion.pk}/approve/",
                                                             {"digest": promo.builds[0].digest}), 409)
    assert "You looked at" in body["detail"] and promotion.short_digest in body["detail"]
    assert not Approval.objects.exists()


def test_deciding_twice_is_a_conflict(promo, personas, api_as):
    promotion = pending(promo, stage="prod", build=1)  # prod wants two approvals: the first leaves it pending
    api = api_as(personas.approver, "approve")
    assert api.post(f"promotions/{promotion.pk}/approve/", {"digest": promotion.digest}).status_code == 200
    problem(api.post(f"promotions/{promotion.pk}/approve/", {"digest": promotion.digest}), 409)
    assert Approval.objects.count() == 1


def test_a_rejection_needs_a_comment_and_ends_the_request(promo, personas, api_as):
    promotion = pending(promo)
    api = api_as(personas.approver, "approve")
    body = problem(api.post(f"promotions/{promotion.pk}/reject/", {"digest": promotion.digest}), 400)
    assert body["errors"][0]["field"] == "body.comment"
    response = api.post(f"promotions/{promotion.pk}/reject/", {"digest": promotion.digest, "comment": "not today"})
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert Promotion.objects.get().status == PromotionStatus.REJECTED


def test_the_requester_withdraws_a_request(promo, personas, api_as):
    promotion = pending(promo)
    problem(api_as(personas.viewer, "promote").post(f"promotions/{promotion.pk}/withdraw/"), 403)
    response = api_as(personas.developer, "promote").post(f"promotions/{promotion.pk}/withdraw/")
    assert response.status_code == 200 and response.json()["status"] == "withdrawn"
    problem(api_as(personas.developer, "promote").post(f"promotions/{promotion.pk}/withdraw/"), 409)


# --- Rollbacks -------------------------------------------------------------------------------------------------------


def test_a_rollback_asks_for_a_digest_the_stage_held_before(promo, personas, api_as):
    promo.push()
    promo.promote(promo.builds[0], "dev")
    promo.promote(promo.builds[1], "dev")
    api = api_as(personas.developer, "promote")
    body = {"definition": promo.definition.pk, "stage": "dev", "digest": promo.builds[0].digest, "reason": "2 breaks"}
    problem(api_as(personas.viewer, "promote").post("rollbacks/", body), 403)
    response = api.post("rollbacks/", body)
    assert response.status_code == 201, response.content
    rollback = Promotion.objects.get(pk=response.json()["id"])
    assert (rollback.kind, rollback.digest) == (PromotionKind.ROLLBACK, promo.builds[0].digest)
    never = problem(api.post("rollbacks/", {**body, "digest": promo.builds[2].digest}), 400)
    assert "never" in never["detail"]
