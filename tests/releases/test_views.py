"""Promotion, stage, approver-group and webhook pages: access for anonymous, outsider, read-only and allowed users; the
refusals (403 with nothing recorded, 409, 400 with the reason); the inbox and its count in the navigation."""

import pytest
from django.test import RequestFactory
from django.urls import reverse

from builds.releases import policy
from builds.releases import services as promotions
from builds.releases.context_processors import inbox
from builds.releases.models import Approval, ApproverGroup, Promotion, PromotionStatus, StageFreeze, StageHistory
from portal.access import team_roles
from portal.models import AuditEvent, Membership, NotificationWebhook
from tests.fragments import shown
from tests.plugins.personas import make_user
from tests.releases.fixtures import PromoEnv

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(promo):
    """A request to promote build 2 to test (test holds build 1), waiting for one approval."""
    for stage in ("dev", "test"):
        StageHistory.objects.create(stage=promo.stages[stage], definition=promo.definition,
                                    digest=promo.builds[0].digest, build=promo.builds[0])
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[1].digest,
                                build=promo.builds[1])
    return promotions.promotion_request(definition=promo.definition, build=promo.builds[1],
                                        target_stage=promo.stages["test"], user=promo.personas.developer,
                                        reason="nginx replaces curl; smoke tests green")


def card(promotion):
    return reverse("releases:promotion_detail", args=[promotion.pk])


def post_decision(client, promotion, verb, **data):
    data.setdefault("digest", promotion.digest)
    return client.post(reverse(f"releases:promotion_{verb}", args=[promotion.pk]), data)


# --- Access ----------------------------------------------------------------------------------------------------------


def test_the_card_is_for_team_members_only(client_for, pending, promo):
    p = promo.personas
    assert client_for(None).get(card(pending)).status_code == 302
    assert client_for(p.outsider).get(card(pending)).status_code == 404
    assert client_for(p.helpdesk).get(card(pending)).status_code == 404
    for user in (p.viewer, p.operator, p.developer, p.approver, p.admin, p.superuser):
        assert client_for(user).get(card(pending)).status_code == 200, user


def test_the_approval_card_shows_what_changes_against_what_the_stage_holds(client_for, pending, promo):
    html = shown(client_for(promo.personas.approver), card(pending))
    assert "What changes in test" in html
    assert "nginx" in html and "curl" in html  # added and removed packages
    assert "5.1-2" in html and "5.2.15-2" in html  # bash upgraded
    assert "org.opencontainers.image.version" in html  # a changed label
    assert "size: " in html and "Base image" in html and promo.builds[1].base_image in html
    assert "r1 → r2" in html  # the Containerfile diff
    assert reverse("portal:run_detail", args=[promo.builds[0].run_id]) in html  # both build logs
    assert reverse("portal:run_detail", args=[promo.builds[1].run_id]) in html
    assert "Hosts that track test" in html and "Disk images of this digest" in html
    assert 'name="digest" value="' + pending.digest in html and "Approve" in html


def test_a_viewer_gets_403_on_approve_and_nothing_is_recorded(client_for, pending, promo):
    response = post_decision(client_for(promo.personas.viewer), pending, "approve")
    assert response.status_code == 403
    assert not Approval.objects.exists()


def test_self_approval_gets_403_and_records_nothing(client_for, promo, pending):
    p = promo.personas
    mine = Promotion.objects.create(definition=promo.definition, build=promo.builds[1], digest=promo.builds[1].digest,
                                    target_stage=promo.stages["prod"], reason="mine", requested_by=p.approver,
                                    requested_by_name="approver")
    response = post_decision(client_for(p.approver), mine, "approve")
    assert response.status_code == 403 and b"You asked for this promotion" in response.content
    assert not Approval.objects.filter(promotion=mine).exists()
    assert not AuditEvent.objects.filter(action="promotion.approve").exists()


def test_approval_by_the_author_or_by_a_non_approver_gets_403_and_records_nothing(client_for, pending, promo):
    p = promo.personas
    response = post_decision(client_for(p.developer), pending, "approve")  # the author, and only a developer
    assert response.status_code == 403
    dev2 = make_user("dev2")
    Membership.objects.create(team=promo.team, user=dev2, role="developer")
    assert post_decision(client_for(dev2), pending, "approve").status_code == 403
    assert post_decision(client_for(p.operator), pending, "reject", comment="no").status_code == 403
    assert not Approval.objects.exists()


def test_an_outsider_posting_a_decision_gets_404(client_for, pending, promo):
    assert post_decision(client_for(promo.personas.outsider), pending, "approve").status_code == 404
    assert not Approval.objects.exists()


def test_an_approver_approves_and_the_quorum_starts_the_application(client_for, pending, promo):
    response = post_decision(client_for(promo.personas.approver), pending, "approve", comment="ship it")
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == PromotionStatus.APPLYING and pending.run is not None
    page = client_for(promo.personas.approver).get(card(pending), follow=True).content.decode()
    assert "ship it" in page and 'hx-trigger="every 2s"' in page


def test_a_decision_for_another_digest_is_409_and_records_nothing(client_for, pending, promo):
    response = post_decision(client_for(promo.personas.approver), pending, "approve", digest=promo.builds[2].digest)
    assert response.status_code == 409 and b"reload the page" in response.content
    assert not Approval.objects.exists()


def test_a_rejection_needs_a_comment(client_for, pending, promo):
    response = post_decision(client_for(promo.personas.approver), pending, "reject", comment="")
    assert response.status_code == 400 and b"Say why you reject it" in response.content
    response = post_decision(client_for(promo.personas.approver), pending, "reject", comment="breaks TLS")
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == PromotionStatus.REJECTED


def test_deciding_twice_is_409(client_for, pending, promo):
    policy.stage_update_policy(stage=promo.stages["test"], user=promo.personas.admin, required_approvals=2)
    client = client_for(promo.personas.approver)
    assert post_decision(client, pending, "approve").status_code == 302
    assert post_decision(client, pending, "approve").status_code == 409
    assert Approval.objects.count() == 1


def test_only_the_requester_or_an_admin_withdraws(client_for, pending, promo):
    url = reverse("releases:promotion_withdraw", args=[pending.pk])
    assert client_for(promo.personas.approver).post(url).status_code == 403
    assert client_for(promo.personas.developer).post(url).status_code == 302
    pending.refresh_from_db()
    assert pending.status == PromotionStatus.WITHDRAWN
    assert client_for(promo.personas.developer).post(url).status_code == 409


def test_decisions_are_post_only(client_for, pending, promo):
    assert client_for(promo.personas.approver).get(reverse("releases:promotion_approve", args=[pending.pk])).status_code == 405


def test_the_live_fragment_asks_for_a_full_reload_once_it_stops_applying(client_for, pending, promo):
    response = client_for(promo.personas.viewer).get(card(pending), HTTP_HX_REQUEST="true",
                                                     HTTP_HX_TARGET="promotion-live")
    assert response.status_code == 200 and response["HX-Refresh"] == "true"


# --- The inbox -------------------------------------------------------------------------------------------------------


def test_the_inbox_lists_what_waits_for_the_user_and_the_navigation_counts_it(client_for, pending, promo):
    p = promo.personas
    page = client_for(p.approver).get(reverse("releases:promotion_list")).content.decode()
    assert 'title="Waiting for your approval">1</span>' in page
    assert f"#{pending.pk}" in page and "Waiting for you" in page
    # The requester and author is not asked; a viewer may not approve.
    for user in (p.developer, p.viewer):
        html = client_for(user).get(reverse("releases:promotion_list") + "?view=inbox").content.decode()
        assert 'title="Waiting for your approval"' not in html and "Nothing waits for you" in html
    # Once decided, it leaves the approver's inbox.
    promotions.promotion_approve(promotion=pending, user=p.approver, digest=pending.digest)
    assert Promotion.objects.waiting_for(p.approver).count() == 0


def test_the_inbox_count_is_one_query(django_assert_num_queries, pending, promo):
    request = RequestFactory().get("/")
    request.user = promo.personas.approver
    team_roles(request.user)  # read once per request anyway (the navigation, every access check)
    context = inbox(request)
    with django_assert_num_queries(1):
        assert int(str(context["nav_inbox_count"])) == 1


def test_people_who_approve_nowhere_are_spared_the_inbox_query(django_assert_num_queries, pending, promo):
    request = RequestFactory().get("/")
    request.user = promo.personas.viewer
    team_roles(request.user)
    context = inbox(request)
    with django_assert_num_queries(1):  # are they in an approver group? no: nothing waits for them
        assert int(str(context["nav_inbox_count"])) == 0


def test_the_inbox_follows_group_requirements(client_for, pending, promo):
    p = promo.personas
    qa = policy.approver_group_save(team=promo.team, user=p.admin, name="QA", members=[p.viewer])
    policy.stage_update_policy(stage=promo.stages["test"], user=p.admin, groups={qa: 1})
    assert list(Promotion.objects.waiting_for(p.viewer)) == [pending]
    assert list(Promotion.objects.waiting_for(p.approver)) == []


def test_the_list_filters_and_searches(client_for, pending, promo):
    client = client_for(promo.personas.viewer)
    assert f"#{pending.pk}" in client.get(reverse("releases:promotion_list") + "?view=all&q=nginx").content.decode()
    assert "No request matches" in client.get(reverse("releases:promotion_list") + "?view=all&q=zzz").content.decode()
    assert client.get(reverse("releases:promotion_list") + "?view=all&status=bogus&team=x&page=999").status_code == 200
    fragment = client.get(reverse("releases:promotion_list") + "?view=all&stage=test", HTTP_HX_REQUEST="true",
                          HTTP_HX_TARGET="promotion-rows")
    assert f"#{pending.pk}" in fragment.content.decode() and "<html" not in fragment.content.decode()


# --- Requesting through the form ---------------------------------------------------------------------------------------


def test_requesting_through_the_form(client_for, promo):
    client = client_for(promo.personas.developer)
    assert "Which image?" in client.get(reverse("releases:promotion_create")).content.decode()
    page = client.get(reverse("releases:promotion_create") + f"?definition={promo.definition.pk}")
    assert page.status_code == 200 and "What each stage asks for" in page.content.decode()
    response = client.post(reverse("releases:promotion_create"), {
        "definition": promo.definition.pk, "build": promo.builds[0].pk, "target_stage": promo.stages["dev"].pk,
        "reason": "first image"})
    promotion = Promotion.objects.get()
    assert response.status_code == 302 and response["Location"] == card(promotion)
    assert promotion.status == PromotionStatus.APPLYING  # dev needs no approval


def test_the_form_refuses_with_the_reason(client_for, promo):
    client = client_for(promo.personas.developer)
    out_of_order = client.post(reverse("releases:promotion_create"), {
        "definition": promo.definition.pk, "build": promo.builds[0].pk, "target_stage": promo.stages["prod"].pk,
        "reason": "skip the queue"})
    assert out_of_order.status_code == 400 and "has not been in test yet" in out_of_order.content.decode()
    foreign = client.post(reverse("releases:promotion_create"), {
        "definition": promo.definition.pk, "build": promo.builds[0].pk,
        "target_stage": promo.personas.other_team.stages.get(name="dev").pk, "reason": "x"})
    assert foreign.status_code == 400 and "Select a valid choice" in foreign.content.decode()
    other = PromoEnv(promo.personas, promo.registry, promo.seeds, name="db-os")
    foreign_build = client.post(reverse("releases:promotion_create"), {
        "definition": promo.definition.pk, "build": other.builds[0].pk, "target_stage": promo.stages["dev"].pk,
        "reason": "x"})
    assert foreign_build.status_code == 400
    assert not Promotion.objects.exists()


def test_the_request_form_is_for_developers_of_the_team(client_for, promo):
    url = reverse("releases:promotion_create") + f"?definition={promo.definition.pk}"
    assert client_for(None).get(url).status_code == 302
    assert client_for(promo.personas.outsider).get(url).status_code == 404
    assert client_for(promo.personas.viewer).get(url).status_code == 403
    assert client_for(promo.personas.viewer).get(reverse("releases:promotion_create")).status_code == 403
    unknown = reverse("releases:promotion_create") + "?definition=999999"
    assert client_for(promo.personas.developer).get(unknown).status_code == 404
    assert client_for(promo.personas.developer).get(reverse("releases:promotion_create") + "?definition=x").status_code == 200


# --- Stages ----------------------------------------------------------------------------------------------------------


def test_stage_pages_access(client_for, pending, promo):
    p = promo.personas
    stage = promo.stages["test"]
    detail, policy = reverse("releases:stage_detail", args=[stage.pk]), reverse("releases:stage_policy", args=[stage.pk])
    assert client_for(None).get(detail).status_code == 302
    assert client_for(p.outsider).get(detail).status_code == 404
    assert client_for(p.viewer).get(detail).status_code == 200
    assert client_for(p.viewer).get(policy).status_code == 403
    assert client_for(p.approver).get(policy).status_code == 403
    assert client_for(p.admin).get(policy).status_code == 200
    board = client_for(p.viewer).get(reverse("releases:stage_board")).content.decode()
    assert "web-os" in board and promo.builds[0].short_digest in board
    assert client_for(p.outsider).get(reverse("releases:stage_board")).status_code == 200  # their own team only
    assert "web-os" not in client_for(p.outsider).get(reverse("releases:stage_board")).content.decode()


def test_an_admin_changes_the_policy_and_it_is_audited(client_for, promo):
    p = promo.personas
    stage = promo.stages["prod"]
    qa = policy.approver_group_save(team=promo.team, user=p.admin, name="QA", members=[p.approver])
    data = {"description": "customers", "required_approvals": 3, "exclude_requester": "on", "exclude_author": "on",
            "approval_ttl_hours": 48, "require_previous_stage": "on", "emergency_extra_approvals": 1,
            "rollback_required_approvals": 1, "window_timezone": "Europe/Paris", f"group_{qa.pk}": 1}
    response = client_for(p.admin).post(reverse("releases:stage_policy", args=[stage.pk]), data)
    assert response.status_code == 302
    stage.refresh_from_db()
    assert (stage.required_approvals, stage.approval_ttl_hours, stage.exclude_build_triggerer) == (3, 48, False)
    assert stage.group_requirements.get().group == qa
    assert AuditEvent.objects.filter(action="stage.policy").exists()
    bad = client_for(p.admin).post(reverse("releases:stage_policy", args=[stage.pk]), {**data, "window_timezone": "Mars/Olympus",
                                                                            "required_approvals": -1})
    assert bad.status_code == 400
    assert client_for(p.approver).post(reverse("releases:stage_policy", args=[stage.pk]), data).status_code == 403


def test_freezes_and_windows_are_set_by_admins(client_for, promo):
    p = promo.personas
    stage = promo.stages["prod"]
    freeze_url = reverse("releases:stage_freeze", args=[stage.pk])
    assert client_for(p.developer).post(freeze_url, {"reason": "x"}).status_code == 403
    assert client_for(p.outsider).post(freeze_url, {"reason": "x"}).status_code == 404
    assert client_for(p.admin).post(freeze_url, {"reason": "holidays", "ends_at": "2099-01-05T00:00"}).status_code == 302
    freeze = StageFreeze.objects.get()
    assert freeze.is_active() and "frozen" in stage.blocked_reason()
    assert client_for(p.admin).post(freeze_url, {"reason": ""}).status_code == 302  # refused with a message
    assert StageFreeze.objects.count() == 1
    lift = reverse("releases:stage_freeze_lift", args=[freeze.pk])
    assert client_for(p.approver).post(lift).status_code == 403
    assert client_for(p.admin).post(lift).status_code == 302
    assert not stage.blocked_reason()
    window_url = reverse("releases:stage_window_add", args=[stage.pk])
    assert client_for(p.admin).post(window_url, {"weekdays": ["1", "3"], "starts": "09:00", "ends": "17:00"}).status_code == 302
    window = stage.change_windows.get()
    assert str(window) == "Tue, Thu 09:00-17:00"
    assert client_for(p.admin).post(window_url, {"weekdays": [], "starts": "x", "ends": "17:00"}).status_code == 302
    assert stage.change_windows.count() == 1
    assert client_for(p.viewer).post(reverse("releases:stage_window_delete", args=[window.pk])).status_code == 403
    assert client_for(p.admin).post(reverse("releases:stage_window_delete", args=[window.pk])).status_code == 302
    assert not stage.change_windows.exists()


def test_a_rollback_is_asked_from_the_stage_history(client_for, promo):
    p = promo.personas
    dev = promo.stages["dev"]
    StageHistory.objects.create(stage=dev, definition=promo.definition, digest=promo.builds[0].digest,
                                build=promo.builds[0])
    StageHistory.objects.create(stage=dev, definition=promo.definition, digest=promo.builds[1].digest,
                                build=promo.builds[1])
    page = client_for(p.developer).get(reverse("releases:stage_detail", args=[dev.pk])).content.decode()
    assert "Roll back to this" in page
    url = reverse("releases:stage_rollback", args=[dev.pk])
    data = {"definition": promo.definition.pk, "digest": promo.builds[0].digest, "reason": "1.1 breaks logins"}
    assert client_for(p.viewer).post(url, data).status_code == 403
    response = client_for(p.developer).post(url, data)
    rollback = Promotion.objects.get()
    assert response.status_code == 302 and response["Location"] == card(rollback)
    assert rollback.is_rollback and rollback.status == PromotionStatus.PENDING
    bad = client_for(p.developer).post(url, {**data, "digest": "sha256:" + "0" * 64, "reason": "x"}, follow=True)
    assert "was never in dev" in bad.content.decode()


# --- Approver groups and webhooks -------------------------------------------------------------------------------------


def test_approver_groups_pages(client_for, promo):
    p = promo.personas
    url = reverse("releases:approver_groups", args=[promo.team.slug])
    assert client_for(p.outsider).get(url).status_code == 404
    assert client_for(p.viewer).get(url).status_code == 200
    assert client_for(p.viewer).post(url, {"name": "QA"}).status_code == 403
    response = client_for(p.admin).post(url, {"name": "QA", "members": [p.approver.pk, p.viewer.pk]})
    assert response.status_code == 302
    group = ApproverGroup.objects.get()
    assert set(group.members.all()) == {p.approver, p.viewer}
    dup = client_for(p.admin).post(url, {"name": "qa"})
    assert dup.status_code == 400 and "has a group called" in dup.content.decode()
    outsider = client_for(p.admin).post(url, {"name": "Sec", "members": [p.outsider.pk]})
    assert outsider.status_code == 400
    edit = reverse("releases:approver_group_edit", args=[group.pk])
    assert client_for(p.viewer).get(edit).status_code == 403
    assert client_for(p.admin).post(edit, {"name": "Quality", "members": [p.approver.pk]}).status_code == 302
    assert client_for(p.admin).post(reverse("releases:approver_group_delete", args=[group.pk])).status_code == 302
    assert not ApproverGroup.objects.exists()


def test_webhook_pages_are_for_admins_and_show_the_secret_once(client_for, promo):
    p = promo.personas
    url = reverse("portal:notification_webhooks", args=[promo.team.slug])
    assert client_for(None).get(url).status_code == 302
    assert client_for(p.outsider).get(url).status_code == 404
    for user in (p.viewer, p.developer, p.approver):
        assert client_for(user).get(url).status_code == 403
    response = client_for(p.admin).post(url, {"name": "chat", "url": "https://chat.example.com/hook",
                                              "events": ["promotion.requested", "promotion.applied"]})
    hook = NotificationWebhook.objects.get()
    assert response.status_code == 200 and hook.secret in response.content.decode()
    assert hook.secret not in client_for(p.admin).get(hook.get_absolute_url()).content.decode()
    assert client_for(p.approver).get(hook.get_absolute_url()).status_code == 403
    bad = client_for(p.admin).post(url, {"name": "x", "url": "ftp://example.com", "events": []})
    assert bad.status_code == 400
    assert client_for(p.admin).post(reverse("portal:notification_webhook_delete", args=[hook.pk])).status_code == 302
    assert not NotificationWebhook.objects.exists()


def test_an_applied_promotions_card_compares_with_what_the_stage_held_before(client_for, promo):
    promo.push()
    promo.promote(promo.builds[0], "dev")
    applied = promo.promote(promo.builds[1], "dev")
    html = client_for(promo.personas.viewer).get(card(applied)).content.decode()
    assert "What changed in dev" in html and "dev held before" in html
    assert "nginx" in html and "holds this digest already" not in html
    assert reverse("diskimages:digest_images", args=[applied.digest]) in html  # its disk images load as a fragment


def test_bad_input_never_gives_a_500(client_for, pending, promo):
    p = promo.personas
    approver, admin, developer = client_for(p.approver), client_for(p.admin), client_for(p.developer)
    assert post_decision(approver, pending, "approve", comment="x" * 5000).status_code == 400
    assert approver.post(reverse("releases:promotion_approve", args=[pending.pk]), {}).status_code == 400
    assert not Approval.objects.exists()
    stage = promo.stages["prod"]
    assert admin.post(reverse("releases:stage_freeze", args=[stage.pk]), {"reason": "x", "ends_at": "2001-01-01T00:00"}
                      ).status_code == 302
    assert admin.post(reverse("releases:stage_freeze", args=[stage.pk]),
                      {"reason": "x", "ends_at": "not a date"}).status_code == 302
    assert not StageFreeze.objects.exists()
    assert admin.post(reverse("releases:stage_window_add", args=[stage.pk]), {"weekdays": ["9"], "starts": "09:00",
                                                                     "ends": "09:00"}).status_code == 302
    assert admin.post(reverse("releases:stage_window_add", args=[stage.pk]), {"weekdays": ["1"], "starts": "09:00",
                                                                     "ends": "09:00"}).status_code == 302
    assert not stage.change_windows.exists()
    assert developer.post(reverse("releases:stage_rollback", args=[stage.pk]), {"definition": "x"}).status_code == 302
    assert developer.post(reverse("releases:stage_rollback", args=[stage.pk]), {"definition": 999999, "digest": "x",
                                                                       "reason": "x"}).status_code == 404
    assert developer.post(reverse("releases:promotion_create"), {"definition": promo.definition.pk, "build": "abc",
                                                         "target_stage": "", "reason": ""}).status_code == 400
    for url in (reverse("releases:stage_detail", args=[stage.pk]) + "?definition=abc&page=zz",
                reverse("releases:promotion_list") + "?page=-1&view=weird", reverse("releases:stage_board")):
        assert developer.get(url).status_code == 200, url
    assert developer.get("/promotions/999999/").status_code == 404
    assert developer.get("/stages/999999/").status_code == 404


# --- Every page and action, for anonymous, outsider, help-desk, read-only and allowed users ---------------------------


def test_every_promotion_page_and_action_checks_access(client_for, pending, promo):
    """Anonymous users log in; outsiders and help-desk users (who read hosts, not promotions) get 404; a viewer reads
    what the team reads and gets 403 on every action; the allowed role gets the page. Nothing changes on the way."""
    from datetime import time as clock

    from portal import notifications
    from portal.models import WebhookDelivery

    p = promo.personas
    test, prod = promo.stages["test"], promo.stages["prod"]
    freeze = policy.stage_freeze(stage=prod, user=p.admin, reason="audit week")
    window = policy.change_window_add(stage=prod, user=p.admin, weekdays=[0], starts=clock(9), ends=clock(17))
    group = policy.approver_group_save(team=promo.team, user=p.admin, name="QA", members=[p.approver])
    hook, _ = notifications.webhook_create(team=promo.team, user=p.admin, name="chat",
                                           url="https://chat.example.com/hook", events=["promotion.applied"])
    delivery = notifications.webhook_test(hook=hook, user=p.admin)
    decision = {"digest": pending.digest, "comment": "no"}
    rollback = {"definition": promo.definition.pk, "digest": promo.builds[0].digest, "reason": "back"}
    # (method, url, data, what a viewer gets, who is allowed, what they get)
    table = [
        ("get", card(pending), None, 200, p.viewer, 200),
        ("post", reverse("releases:promotion_approve", args=[pending.pk]), decision, 403, None, None),
        ("post", reverse("releases:promotion_reject", args=[pending.pk]), decision, 403, None, None),
        ("post", reverse("releases:promotion_withdraw", args=[pending.pk]), None, 403, None, None),
        ("post", reverse("releases:promotion_retry", args=[pending.pk]), None, 403, None, None),
        ("post", reverse("releases:promotion_reopen", args=[pending.pk]), None, 403, None, None),
        ("get", reverse("releases:stage_detail", args=[test.pk]), None, 200, p.viewer, 200),
        ("get", reverse("releases:stage_policy", args=[test.pk]), None, 403, p.admin, 200),
        ("post", reverse("releases:stage_policy", args=[test.pk]), {"required_approvals": 0}, 403, None, None),
        ("post", reverse("releases:stage_rollback", args=[test.pk]), rollback, 403, None, None),
        ("post", reverse("releases:stage_freeze", args=[test.pk]), {"reason": "x"}, 403, None, None),
        ("post", reverse("releases:stage_freeze_lift", args=[freeze.pk]), None, 403, None, None),
        ("post", reverse("releases:stage_window_add", args=[test.pk]), {"weekdays": ["1"], "starts": "09:00", "ends": "17:00"},
         403, None, None),
        ("post", reverse("releases:stage_window_delete", args=[window.pk]), None, 403, None, None),
        ("get", reverse("releases:approver_groups", args=[promo.team.slug]), None, 200, p.admin, 200),
        ("post", reverse("releases:approver_groups", args=[promo.team.slug]), {"name": "Sec"}, 403, None, None),
        ("get", reverse("releases:approver_group_edit", args=[group.pk]), None, 403, p.admin, 200),
        ("post", reverse("releases:approver_group_delete", args=[group.pk]), None, 403, None, None),
        ("get", reverse("portal:notification_webhooks", args=[promo.team.slug]), None, 403, p.admin, 200),
        ("get", reverse("portal:notification_webhook_detail", args=[hook.pk]), None, 403, p.admin, 200),
        ("post", reverse("portal:notification_webhook_delete", args=[hook.pk]), None, 403, None, None),
        ("post", reverse("portal:notification_webhook_test", args=[hook.pk]), None, 403, None, None),
        ("post", reverse("portal:webhook_delivery_redeliver", args=[delivery.pk]), None, 403, None, None),
    ]
    for method, url, data, viewer_gets, allowed, allowed_gets in table:
        def status(user, method=method, url=url, data=data):
            return getattr(client_for(user), method)(url, data or {})

        anonymous = status(None)
        assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/"), (method, url)
        for user in (p.outsider, p.helpdesk):
            assert status(user).status_code == 404, (user, method, url)
        assert status(p.viewer).status_code == viewer_gets, (method, url)
        if allowed is not None:
            assert status(allowed).status_code == allowed_gets, (allowed, method, url)

    pending.refresh_from_db()
    assert pending.status == PromotionStatus.PENDING and not Approval.objects.exists()
    assert Promotion.objects.count() == 1 and test.freezes.count() == 0
    freeze.refresh_from_db()
    assert freeze.lifted_at is None and prod.change_windows.count() == 1
    assert ApproverGroup.objects.count() == 1 and NotificationWebhook.objects.count() == 1
    assert WebhookDelivery.objects.count() == 1


def test_the_lists_show_outsiders_and_help_desk_nothing_of_the_team(client_for, pending, promo):
    p = promo.personas
    for url in (reverse("releases:promotion_list"), reverse("releases:promotion_list") + "?view=all",
                reverse("releases:stage_board")):
        response = client_for(None).get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
        for user in (p.outsider, p.helpdesk):
            body = client_for(user).get(url).content.decode()
            assert "web-os" not in body and pending.build.short_digest not in body, (user, url)
        assert "web-os" in client_for(p.viewer).get(url).content.decode(), url
    assert client_for(p.helpdesk).get(reverse("releases:promotion_create")).status_code == 403


def test_retrying_a_failed_promotion_is_for_developers(client_for, pending, promo):
    from portal.services import run_finish

    promotions.promotion_approve(promotion=pending, user=promo.personas.approver, digest=pending.digest)
    pending.refresh_from_db()
    run_finish(pending.run, status="failed", reason="The worker running it stopped responding")
    promotions.promotions_apply_due()
    pending.refresh_from_db()
    assert pending.status == PromotionStatus.FAILED
    url = reverse("releases:promotion_retry", args=[pending.pk])
    assert client_for(promo.personas.viewer).post(url).status_code == 403
    assert client_for(promo.personas.operator).post(url).status_code == 403
    response = client_for(promo.personas.developer).post(url, follow=True)
    assert response.status_code == 200 and "Applying request" in response.content.decode()
    pending.refresh_from_db()
    assert pending.status == PromotionStatus.APPLYING and pending.attempts == 2
    assert client_for(promo.personas.developer).post(url).status_code == 409  # applying, not failed


@pytest.mark.django_db(transaction=True)  # commits as in production: the task is enqueued when the approval commits
def test_with_the_workers_broker_down_an_approval_fails_the_promotion_with_the_reason_not_a_500(
        client_for, pending, promo, redis_server):
    from tests.plugins.redis_server import _forget_broker_connections

    client = client_for(promo.personas.approver)
    redis_server.stop()
    try:
        response = client.post(reverse("releases:promotion_approve", args=[pending.pk]), {"digest": pending.digest},
                               follow=True)
    finally:
        redis_server.start()
        _forget_broker_connections()
    assert response.status_code == 200 and response.redirect_chain == [(card(pending), 302)]
    pending.refresh_from_db()
    assert pending.status == PromotionStatus.FAILED and "could not hand it to a worker" in pending.status_note
    assert pending.run.status == "failed" and not StageHistory.objects.filter(promotion=pending).exists()
    page = response.content.decode()
    assert "applying it failed" in page and reverse("releases:promotion_retry", args=[pending.pk]) in page


@pytest.mark.parametrize("query", ["?build=²", "?definition=²", "?build=٣", "?build=99999999999999999999999"])
def test_odd_numbers_in_the_request_links_get_a_page_not_a_500(client_for, promo, query):
    assert client_for(promo.personas.developer).get(reverse("releases:promotion_create") + query).status_code in (200, 404)


def test_odd_numbers_in_the_promotion_search_and_stage_history_get_a_page_not_a_500(client_for, promo):
    client = client_for(promo.personas.developer)
    assert client.get(reverse("releases:promotion_list") + "?view=all&q=%23²").status_code == 200
    assert client.get(reverse("releases:stage_detail", args=[promo.stages["dev"].pk]) + "?definition=²").status_code == 200
