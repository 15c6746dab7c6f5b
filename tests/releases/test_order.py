"""Promotions that know their order: a request for a build older than what its stage holds says it would move the
stage back and is approved only with the stage's name typed; a request for a newer build supersedes the open requests
for older ones to the same stage, which can be reopened; the inbox groups what waits by stage."""

import pytest
from django.urls import reverse

from builds.releases import services as promotions
from builds.releases.models import Approval, Promotion, PromotionStatus, StageHistory
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db


def hold(promo, stage, build):
    """`stage` holds `build` now (as if a promotion had put it there)."""
    return StageHistory.objects.create(stage=promo.stages[stage], definition=promo.definition, digest=build.digest,
                                       build=build)


def ask(promo, build, stage, reason=None):
    return promotions.promotion_request(definition=promo.definition, build=build, target_stage=promo.stages[stage],
                                        user=promo.personas.developer, reason=reason or f"ship build {build.number}")


@pytest.fixture
def scene(promo):
    """dev has held builds 1, 2 and 3; test held build 1 and then build 3."""
    b1, b2, b3 = promo.builds
    for build in (b1, b2, b3):
        hold(promo, "dev", build)
    hold(promo, "test", b1)
    return promo


@pytest.fixture
def backwards(scene):
    """Test holds build 3; a request to put build 2 in test waits for its one approval."""
    hold(scene, "test", scene.builds[2])
    return ask(scene, scene.builds[1], "test", reason="build 3 broke the login page")


def approve(client, promotion, **data):
    return client.post(reverse("releases:promotion_approve", args=[promotion.pk]),
                       {"digest": promotion.digest, "comment": "", **data})


# --- Moving a stage back ---------------------------------------------------------------------------------------------


def test_the_card_says_in_red_that_an_older_build_would_move_the_stage_back(client_for, backwards, promo):
    html = client_for(promo.personas.approver).get(backwards.get_absolute_url()).content.decode()
    assert "would move test back from build 3 to build 2" in html
    assert 'class="alert alert-danger' in html and 'name="confirm"' in html


def test_approving_a_move_back_without_typing_the_stage_records_nothing(client_for, backwards, promo):
    client = client_for(promo.personas.approver)
    for typed in ("", "prod", "Test"):
        response = approve(client, backwards, confirm=typed)
        assert response.status_code == 400, typed
        assert "would move test back from build 3 to build 2" in response.content.decode()
    assert not Approval.objects.filter(promotion=backwards).exists()
    backwards.refresh_from_db()
    assert backwards.status == PromotionStatus.PENDING


def test_approving_a_move_back_with_the_stage_typed_approves_it_and_the_audit_says_so(client_for, backwards, promo):
    response = approve(client_for(promo.personas.approver), backwards, confirm="test")
    assert response.status_code == 302
    backwards.refresh_from_db()
    assert backwards.status == PromotionStatus.APPLYING  # test needs one approval
    event = AuditEvent.objects.get(action="promotion.approve", object_id=str(backwards.pk))
    assert "would move test back from build 3 to build 2" in event.summary and "confirmed" in event.summary
    assert event.detail["moves_back"] == "would move test back from build 3 to build 2"


def test_the_service_refuses_a_move_back_without_confirmation_too(backwards, promo):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="type “test” to confirm"):
        promotions.promotion_approve(promotion=backwards, user=promo.personas.approver, digest=backwards.digest)
    assert not Approval.objects.exists()


def test_rejecting_a_move_back_needs_no_confirmation(client_for, backwards, promo):
    response = client_for(promo.personas.approver).post(
        reverse("releases:promotion_reject", args=[backwards.pk]), {"digest": backwards.digest, "comment": "no"})
    assert response.status_code == 302
    backwards.refresh_from_db()
    assert backwards.status == PromotionStatus.REJECTED


def test_a_request_for_a_newer_build_is_not_a_move_back(client_for, scene, promo):
    forward = ask(scene, scene.builds[1], "test")
    html = client_for(promo.personas.approver).get(forward.get_absolute_url()).content.decode()
    assert "move test back" not in html and 'name="confirm"' not in html
    assert approve(client_for(promo.personas.approver), forward).status_code == 302


# --- Superseded requests ---------------------------------------------------------------------------------------------


def test_a_request_for_a_newer_build_supersedes_the_open_requests_for_older_ones(client_for, scene, promo):
    older = ask(scene, scene.builds[1], "test")
    other_stage = promotions.promotion_request(definition=promo.definition, build=promo.builds[0],
                                               target_stage=promo.stages["prod"], user=promo.personas.developer,
                                               reason="prod catches up")
    newer = ask(scene, scene.builds[2], "test")
    older.refresh_from_db()
    other_stage.refresh_from_db()
    assert older.status == PromotionStatus.SUPERSEDED and older.superseded_by == newer
    assert f"Superseded by #{newer.pk}" in older.status_note
    assert other_stage.status == PromotionStatus.PENDING  # another stage: not replaced
    assert AuditEvent.objects.filter(action="promotion.supersede", object_id=str(older.pk)).count() == 1

    client = client_for(promo.personas.approver)
    inbox = client.get(reverse("releases:promotion_list") + "?view=inbox").content.decode()
    assert f"#{newer.pk}" in inbox and f">#{older.pk}<" not in inbox
    card = client.get(older.get_absolute_url()).content.decode()
    assert "Superseded" in card and reverse("releases:promotion_detail", args=[newer.pk]) in card
    assert 'formaction="' not in card  # no Approve/Reject on a superseded request
    assert approve(client, older).status_code == 409
    assert not Approval.objects.filter(promotion=older).exists()


def test_a_request_for_an_older_build_supersedes_nothing(scene):
    newer = ask(scene, scene.builds[2], "test")
    older = ask(scene, scene.builds[1], "test")
    newer.refresh_from_db()
    assert newer.status == PromotionStatus.PENDING and older.status == PromotionStatus.PENDING


def test_every_role_and_the_reopen_button(client_for, scene, promo):
    """Anonymous users log in; outsiders and help-desk get 404; viewers and operators 403; developers reopen it."""
    p = promo.personas
    older = ask(scene, scene.builds[1], "test")
    ask(scene, scene.builds[2], "test")
    url = reverse("releases:promotion_reopen", args=[older.pk])
    anonymous = client_for(None).post(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    for user in (p.outsider, p.helpdesk):
        assert client_for(user).post(url).status_code == 404, user
    for user in (p.viewer, p.operator):
        assert client_for(user).post(url).status_code == 403, user
        assert f'action="{url}"' not in client_for(user).get(older.get_absolute_url()).content.decode()
    assert client_for(p.developer).get(url).status_code == 405
    older.refresh_from_db()
    assert older.status == PromotionStatus.SUPERSEDED

    assert f'action="{url}"' in client_for(p.developer).get(older.get_absolute_url()).content.decode()
    response = client_for(p.developer).post(url, follow=True)
    assert response.status_code == 200 and "waits for approval again" in response.content.decode()
    older.refresh_from_db()
    assert older.status == PromotionStatus.PENDING and older.superseded_by is None
    assert AuditEvent.objects.filter(action="promotion.reopen", object_id=str(older.pk)).exists()
    assert client_for(p.developer).post(url).status_code == 409  # pending, not superseded


def test_reopening_keeps_the_approvals_unless_the_request_now_moves_the_stage_back(scene, promo):
    from builds.releases.models import Stage

    Stage.objects.filter(pk=promo.stages["test"].pk).update(required_approvals=2)
    older = ask(scene, scene.builds[1], "test")
    promotions.promotion_approve(promotion=older, user=promo.personas.approver, digest=older.digest)
    ask(scene, scene.builds[2], "test")
    hold(scene, "test", scene.builds[2])  # the newer build reached test meanwhile

    reopened = promotions.promotion_reopen(promotion=older, user=promo.personas.developer)
    assert reopened.status == PromotionStatus.PENDING
    assert "would move test back from build 3 to build 2" in reopened.status_note
    assert not Approval.objects.filter(promotion=older, superseded_at__isnull=True).exists()


def test_reopening_a_move_back_on_a_stage_without_approvals_needs_the_stage_typed(client_for, scene, promo):
    """Nobody would approve it there: reopened, the request applies at once, so its requester confirms the move back."""
    from builds.releases.models import Stage

    older = ask(scene, scene.builds[1], "test")
    ask(scene, scene.builds[2], "test")
    hold(scene, "test", scene.builds[2])  # the newer build reached test meanwhile
    Stage.objects.filter(pk=promo.stages["test"].pk).update(required_approvals=0)
    client = client_for(promo.personas.developer)
    url = reverse("releases:promotion_reopen", args=[older.pk])

    card = client.get(older.get_absolute_url()).content.decode()
    assert "Reopened, it would move test back from build 3 to build 2 at once" in card
    assert 'name="confirm"' in card and 'pattern="test"' in card
    for typed in ("", "prod", "Test"):
        response = client.post(url, {"confirm": typed})
        assert response.status_code == 400 and "type “test” to confirm" in response.content.decode()
        older.refresh_from_db()
        assert older.status == PromotionStatus.SUPERSEDED
    assert not AuditEvent.objects.filter(action="promotion.reopen", object_id=str(older.pk)).exists()

    assert client.post(url, {"confirm": "test"}).status_code == 302
    older.refresh_from_db()
    assert older.status in (PromotionStatus.APPLYING, PromotionStatus.APPROVED)  # no approval to wait for
    event = AuditEvent.objects.get(action="promotion.reopen", object_id=str(older.pk))
    assert event.detail["confirmed"] is True and "would move test back" in event.detail["moves_back"]


def test_reopening_a_move_back_that_approvers_will_confirm_needs_no_typing(scene, promo):
    older = ask(scene, scene.builds[1], "test")
    ask(scene, scene.builds[2], "test")
    hold(scene, "test", scene.builds[2])
    reopened = promotions.promotion_reopen(promotion=older, user=promo.personas.developer)  # test needs one approval
    assert reopened.status == PromotionStatus.PENDING


def test_asking_to_move_a_stage_without_approvals_back_needs_the_stage_typed(client_for, scene, promo):
    """dev needs no approval, so a request applies at once: for an older build than dev holds, the requester confirms."""
    from builds.releases.models import Stage

    Stage.objects.filter(pk=promo.stages["dev"].pk).update(required_approvals=0)
    client = client_for(promo.personas.developer)
    url = reverse("releases:promotion_create")
    form = {"definition": promo.definition.pk, "build": promo.builds[0].pk, "target_stage": promo.stages["dev"].pk,
            "reason": "build 3 broke the login page"}
    response = client.post(url, form)
    html = response.content.decode()
    assert response.status_code == 400
    assert "would move dev back from build 3 to build 1 at once, since dev needs no approval" in html
    assert 'name="confirm"' in html  # the field appears once it is needed
    response = client.post(url, {**form, "confirm": "prod"})
    assert response.status_code == 400
    assert not Promotion.objects.filter(target_stage=promo.stages["dev"]).exists()
    assert not AuditEvent.objects.filter(action="promotion.request").exists()

    assert client.post(url, {**form, "confirm": "dev"}).status_code == 302
    promotion = Promotion.objects.get(target_stage=promo.stages["dev"])
    assert promotion.status in (PromotionStatus.APPLYING, PromotionStatus.APPROVED)
    event = AuditEvent.objects.get(action="promotion.request", object_id=str(promotion.pk))
    assert event.detail["confirmed"] is True and event.detail["moves_back"].startswith("would move dev back")


def test_reopening_is_refused_when_the_stage_holds_the_digest_already(client_for, scene, promo):
    older = ask(scene, scene.builds[1], "test")
    ask(scene, scene.builds[2], "test")
    hold(scene, "test", scene.builds[1])
    response = client_for(promo.personas.developer).post(reverse("releases:promotion_reopen", args=[older.pk]))
    assert response.status_code == 400 and "holds" in response.content.decode()
    older.refresh_from_db()
    assert older.status == PromotionStatus.SUPERSEDED


# --- The inbox, by stage ---------------------------------------------------------------------------------------------


def test_the_inbox_groups_requests_by_stage_in_the_stages_order(client_for, scene, promo):
    from builds.releases.models import Stage

    Stage.objects.filter(team=promo.team).update(require_previous_stage=False)
    to_prod = promotions.promotion_request(definition=promo.definition, build=promo.builds[0],
                                           target_stage=promo.stages["prod"], user=promo.personas.developer,
                                           reason="prod catches up")
    to_test = ask(scene, scene.builds[1], "test")
    html = client_for(promo.personas.approver).get(reverse("releases:promotion_list") + "?view=inbox").content.decode()
    groups = html.split('class="stage-group"')
    assert len(groups) == 3  # before, test, prod
    assert "1 request to test" in groups[1] and f"#{to_test.pk}" in groups[1] and f"#{to_prod.pk}" not in groups[1]
    assert "1 request to prod" in groups[2] and f"#{to_prod.pk}" in groups[2]
    assert Promotion.objects.filter(status=PromotionStatus.PENDING).count() == 2


def test_the_inbox_marks_a_request_that_would_move_its_stage_back(client_for, backwards, promo):
    html = client_for(promo.personas.approver).get(reverse("releases:promotion_list") + "?view=inbox").content.decode()
    assert "would move test back from build 3 to build 2" in html
