"""The gate: who may approve, the quorum, digests, expiry, refusals with reasons, applying with a real registry and
skopeo, rollbacks and pinning, and the audit chain (freezes, change windows and the emergency override are in
tests/releases/test_gate_windows.py)."""

import subprocess
import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from builds.releases import gate, policy
from builds.releases import services as promotions
from builds.releases.models import (
    Approval,
    ApproverGroup,
    Promotion,
    PromotionStatus,
    StageGroupRequirement,
    StageHistory,
)
from builds.releases.services import PromotionStateError
from portal.access import forget_roles
from portal.models import AuditEvent, Membership, Run, RunStatus
from portal.services import audit_verify
from tests.builds.fixtures import Registry
from tests.fragments import shown
from tests.helpers import wait_for
from tests.plugins.personas import make_user
from tests.releases.fixtures import PromoEnv, skopeo_copy, stage_digest
from tests.releases.gate_steps import apply_runs, approve, request

pytestmark = pytest.mark.django_db




# --- Applying, with a real registry ----------------------------------------------------------------------------------


def test_a_stage_without_approvals_applies_at_once_and_skopeo_sees_the_digest_on_the_tag(promo):
    promo.push()
    build = promo.builds[0]
    promotion = request(promo, build, "dev")
    assert promotion.status == PromotionStatus.APPLYING
    promotion = promo.apply(promotion)

    assert promotion.status == PromotionStatus.APPLIED, promotion.status_note
    assert stage_digest(promo.ref("dev")) == build.digest
    entry = StageHistory.objects.current(promo.stages["dev"], promo.definition)
    assert (entry.digest, entry.promotion, entry.applied_by, entry.previous_digest) == (
        build.digest, promotion, promo.personas.developer, "")
    assert promotion.run.status == RunStatus.SUCCEEDED


def test_after_the_quorum_the_stage_tag_resolves_to_exactly_the_promoted_digest(promo):
    promo.push()
    promo.promote(promo.builds[0], "dev")
    promo.promote(promo.builds[1], "dev")
    promotion = request(promo, promo.builds[1], "test", reason="QA passed on staging")
    assert promotion.status == PromotionStatus.PENDING and promotion.previous_digest == ""
    assert not apply_runs(promotion).exists()

    promotion = approve(promotion, promo.personas.approver)
    assert promotion.status == PromotionStatus.APPLYING
    promotion = promo.apply(promotion)

    assert promotion.status == PromotionStatus.APPLIED
    assert stage_digest(promo.ref("test")) == promo.builds[1].digest
    assert stage_digest(promo.ref("dev")) == promo.builds[1].digest
    log = "\n".join(chunk.text for chunk in promotion.run.chunks.all())
    assert "skopeo copy --preserve-digests" in log and f"Verified: {promo.ref('test')} resolves to" in log
    actions = list(AuditEvent.objects.filter(object_type="releases.promotion", object_id=str(promotion.pk))
                   .order_by("seq").values_list("action", flat=True))
    assert actions == ["promotion.request", "promotion.approve", "promotion.approved", "promotion.apply_start",
                       "promotion.applied"]
    assert audit_verify() is None


def test_a_registry_that_is_down_fails_the_application_with_the_reason_and_leaves_the_tag_unchanged(
        personas, oci_registry, seed_images, tmp_path):
    (tmp_path / "registry").mkdir()
    registry = Registry(tmp_path / "registry")  # a registry of this test's own, to stop and start
    try:
        promo = PromoEnv(personas, registry, seed_images)
        for number, seed in enumerate(seed_images, start=1):
            skopeo_copy(f"{oci_registry.address}/seed/promotions@{seed.digest}",
                        f"{promo.repository}:build-{number}")
        first = promo.promote(promo.builds[0], "dev")
        assert first.status == PromotionStatus.APPLIED, first.status_note
        assert stage_digest(promo.ref("dev")) == promo.builds[0].digest

        registry.process.terminate()
        registry.process.wait(10)
        promotion = promo.promote(promo.builds[1], "dev", expect_applied=False)

        assert promotion.status == PromotionStatus.FAILED
        assert "registry" in promotion.status_note and "not touched" in promotion.status_note
        assert promotion.run.status == RunStatus.FAILED and promotion.run.exit_reason == promotion.status_note
        assert StageHistory.objects.current(promo.stages["dev"], promo.definition).digest == promo.builds[0].digest

        registry.process = subprocess.Popen(["docker-registry", "serve", str(registry.directory / "config.yml")],
                                            stdout=registry.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(registry._answers, what="the registry to come back")
        assert stage_digest(promo.ref("dev")) == promo.builds[0].digest  # unchanged

        promotion = promotions.promotion_retry(promotion=promotion, user=personas.developer)
        assert promotion.status == PromotionStatus.APPLYING and promotion.attempts == 2
        promotion = promo.apply(promotion)
        assert promotion.status == PromotionStatus.APPLIED
        assert stage_digest(promo.ref("dev")) == promo.builds[1].digest
    finally:
        registry.stop()


def test_a_redelivered_apply_task_does_nothing_the_second_time(promo):
    promo.push()
    promotion = promo.promote(promo.builds[0], "dev")
    from builds.releases.apply import promotion_apply_execute

    promotion_apply_execute(promotion.run_id)
    assert StageHistory.objects.filter(promotion=promotion).count() == 1
    assert apply_runs(promotion).count() == 1


# --- The race ---------------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_approvers_completing_the_quorum_at_the_same_instant_apply_it_exactly_once(promo):
    """Two threads, two database connections, one barrier: both approvals arrive together; the row lock lets one of them
    complete the quorum and start the application; the other finds it decided and records nothing. (On PostgreSQL the
    row lock decides; on SQLite, immediate transactions serialise the two writers.)"""
    promo.push()
    promo.promote(promo.builds[0], "dev")
    promo.promote(promo.builds[0], "test", approvers=[promo.personas.approver])
    promotion = request(promo, promo.builds[0], "prod")  # prod needs two approvals
    approvers = [promo.personas.approver, promo.personas.approver2]
    third = make_user("approver3")
    Membership.objects.create(team=promo.team, user=third, role="approver")
    approve(promotion, third)  # one of two: the next two race for the second
    barrier = threading.Barrier(2)
    outcomes = {}

    def decide(user):
        try:
            barrier.wait(5)
            approve(promotion, user)
            outcomes[user.username] = "approved"
        except PromotionStateError as exc:
            outcomes[user.username] = f"refused: {exc.messages[0]}"
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(user,)) for user in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(v.split(":")[0] for v in outcomes.values()) == ["approved", "refused"], outcomes
    assert apply_runs(promotion).count() == 1
    assert Approval.objects.filter(promotion=promotion).count() == 2  # the loser recorded nothing
    promotion = promo.apply(promotion)
    promo.apply(promotion)  # a redelivered task
    assert promotion.status == PromotionStatus.APPLIED
    assert StageHistory.objects.filter(stage=promo.stages["prod"], definition=promo.definition).count() == 1
    assert AuditEvent.objects.filter(action="promotion.applied", object_id=str(promotion.pk)).count() == 1
    assert stage_digest(promo.ref("prod")) == promo.builds[0].digest


# --- Who may approve ---------------------------------------------------------------------------------------------------


def _no_decisions(promotion):
    return not Approval.objects.filter(promotion=promotion).exists()


def test_it_refuses_self_approval(promo):
    promo.promote(promo.builds[0], "dev", apply=False)
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test", user=promo.personas.approver)
    with pytest.raises(PermissionDenied, match="You asked for this promotion"):
        approve(promotion, promo.personas.approver)
    assert _no_decisions(promotion) and not AuditEvent.objects.filter(action="promotion.approve").exists()


def test_it_refuses_approval_by_the_revisions_author(promo):
    promo.personas.developer.memberships.update(role="approver")  # the author may approve others' work, not this
    forget_roles(promo.personas.developer)
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test", user=promo.personas.approver2)
    with pytest.raises(PermissionDenied, match="You wrote revision 1"):
        approve(promotion, promo.personas.developer)
    assert _no_decisions(promotion)


def test_it_refuses_approval_by_whoever_started_the_build(promo):
    promo.builds[0].run.__class__.objects.filter(pk=promo.builds[0].run_id).update(started_by=promo.personas.approver)
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test")
    with pytest.raises(PermissionDenied, match="You started build 1"):
        approve(promotion, promo.personas.approver)
    assert _no_decisions(promotion)


def test_it_refuses_approval_by_a_non_approver(promo):
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test")
    for user in (promo.personas.viewer, promo.personas.operator):
        with pytest.raises(PermissionDenied, match="does not allow you to sign off"):
            approve(promotion, user)
    other_dev = make_user("dev2")
    Membership.objects.create(team=promo.team, user=other_dev, role="developer")
    with pytest.raises(PermissionDenied):
        approve(promotion, other_dev)
    assert _no_decisions(promotion)


def test_the_policy_may_allow_the_author_to_approve(promo):
    stage = promo.stages["test"]
    policy.stage_update_policy(stage=stage, user=promo.personas.admin, exclude_author=False,
                                   exclude_build_triggerer=False)
    promo.personas.developer.memberships.update(role="approver")
    forget_roles(promo.personas.developer)
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test", user=promo.personas.approver)
    assert approve(promotion, promo.personas.developer).status == PromotionStatus.APPLYING


def test_approvals_are_bound_to_the_digest_the_approver_saw(promo):
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test")
    with pytest.raises(PromotionStateError, match="reload the page"):
        approve(promotion, promo.personas.approver, digest=promo.builds[1].digest)
    assert _no_decisions(promotion)
    # An approval recorded for another digest (a tampered row) never counts.
    Approval.objects.create(promotion=promotion, approver=promo.personas.approver, approver_name="approver",
                            decision="approve", digest=promo.builds[1].digest)
    assert gate.quorum(promotion).counted == []


def test_expired_approvals_do_not_count(promo):
    prod = promo.stages["prod"]
    policy.stage_update_policy(stage=prod, user=promo.personas.admin, approval_ttl_hours=24)
    for stage in ("dev", "test"):
        StageHistory.objects.create(stage=promo.stages[stage], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "prod")
    approve(promotion, promo.personas.approver)
    assert promotion not in Promotion.objects.waiting_for(promo.personas.approver)
    Approval.objects.filter(promotion=promotion).update(created_at=timezone.now() - timedelta(hours=25))
    assert promotion in Promotion.objects.waiting_for(promo.personas.approver)  # asked again, in the inbox
    promotion = approve(promotion, promo.personas.approver2)
    assert promotion.status == PromotionStatus.PENDING  # one fresh approval of two
    result = gate.quorum(promotion)
    assert [a.approver_name for a in result.expired] == ["approver"] and len(result.counted) == 1
    assert promotion in promo.team.stages.get(name="prod").promotions.all()
    # The first approver may approve again; that completes it.
    assert approve(promotion, promo.personas.approver).status == PromotionStatus.APPLYING
    assert Approval.objects.filter(promotion=promotion, superseded_at__isnull=False).count() == 1


def test_one_rejection_ends_the_request_and_a_comment_is_required(promo):
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test")
    with pytest.raises(ValidationError, match="Say why"):
        promotions.promotion_reject(promotion=promotion, user=promo.personas.approver, digest=promotion.digest,
                                    comment=" ")
    promotion = promotions.promotion_reject(promotion=promotion, user=promo.personas.approver, digest=promotion.digest,
                                            comment="fails the smoke test")
    assert promotion.status == PromotionStatus.REJECTED and "fails the smoke test" in promotion.status_note
    with pytest.raises(PromotionStateError):
        approve(promotion, promo.personas.approver2)
    rejected = AuditEvent.objects.get(action="promotion.reject", object_id=str(promotion.pk))
    assert rejected.actor == promo.personas.approver and "fails the smoke test" in rejected.summary
    assert audit_verify() is None  # in the hash chain


def test_the_requester_may_withdraw_and_others_may_not(promo):
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "test")
    with pytest.raises(PermissionDenied):
        promotions.promotion_withdraw(promotion=promotion, user=promo.personas.approver)
    promotion = promotions.promotion_withdraw(promotion=promotion, user=promo.personas.developer)
    assert promotion.status == PromotionStatus.WITHDRAWN
    assert AuditEvent.objects.filter(action="promotion.withdraw", object_id=str(promotion.pk)).exists()


def test_named_groups_need_distinct_people_one_from_each(promo):
    qa = policy.approver_group_save(team=promo.team, user=promo.personas.admin, name="QA",
                                        members=[promo.personas.approver, promo.personas.viewer])
    security = policy.approver_group_save(team=promo.team, user=promo.personas.admin, name="Security",
                                              members=[promo.personas.approver, promo.personas.operator])
    prod = promo.stages["prod"]
    policy.stage_update_policy(stage=prod, user=promo.personas.admin, required_approvals=2,
                                   groups={qa: 1, security: 1})
    assert StageGroupRequirement.objects.filter(stage=prod).count() == 2
    for stage in ("dev", "test"):
        StageHistory.objects.create(stage=promo.stages[stage], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = request(promo, promo.builds[0], "prod")
    # approver2 has the approver role but is in no group: groups replace the role for this stage.
    with pytest.raises(PermissionDenied, match="Only members of QA or Security"):
        approve(promotion, promo.personas.approver2)
    promotion = approve(promotion, promo.personas.approver)  # in both groups: counts once
    assert promotion.status == PromotionStatus.PENDING
    # The viewer is in QA: a group member's approval counts whatever their role.
    promotion = approve(promotion, promo.personas.viewer)
    result = gate.quorum(promotion)
    assert result.met and {g.name: g.approvers for g in result.groups} == {"QA": ["viewer"], "Security": ["approver"]}
    assert promotion.status == PromotionStatus.APPLYING


def test_approver_groups_hold_only_team_members(promo):
    with pytest.raises(ValidationError, match="Not members of Platform: outsider"):
        policy.approver_group_save(team=promo.team, user=promo.personas.admin, name="QA",
                                       members=[promo.personas.outsider])
    with pytest.raises(PermissionDenied):
        policy.approver_group_save(team=promo.team, user=promo.personas.approver, name="QA", members=[])


# --- Refusals with the reason ----------------------------------------------------------------------------------------


def test_a_digest_never_built_by_this_definition_is_refused(promo):
    with pytest.raises(ValidationError, match="was never built by platform/web-os"):
        promotions.promotion_request(definition=promo.definition, digest="sha256:" + "ab" * 32,
                                     target_stage=promo.stages["dev"], user=promo.personas.developer, reason="x")
    with pytest.raises(ValidationError, match="sha256: followed by 64"):
        promotions.promotion_request(definition=promo.definition, digest="latest", target_stage=promo.stages["dev"],
                                     user=promo.personas.developer, reason="x")
    other = PromoEnv(promo.personas, promo.registry, promo.seeds, name="db-os")
    with pytest.raises(ValidationError, match="was not built by platform/web-os"):
        request(promo, other.builds[0], "dev")
    assert not promo.definition.promotions.exists()


def test_a_stage_of_another_team_is_refused(promo):
    foreign = promo.personas.other_team.stages.get(name="dev")
    with pytest.raises(ValidationError, match="belongs to team Other"):
        promotions.promotion_request(definition=promo.definition, build=promo.builds[0], target_stage=foreign,
                                     user=promo.personas.developer, reason="x")


def test_out_of_order_promotions_are_refused_when_the_policy_wants_the_previous_stage(promo):
    with pytest.raises(ValidationError, match="has not been in dev yet"):
        request(promo, promo.builds[0], "test")
    with pytest.raises(ValidationError, match="has not been in test yet"):
        request(promo, promo.builds[0], "prod")
    policy.stage_update_policy(stage=promo.stages["test"], user=promo.personas.admin, require_previous_stage=False)
    assert request(promo, promo.builds[0], "test").status == PromotionStatus.PENDING


def test_a_failed_build_a_duplicate_request_or_what_the_stage_holds_is_refused(promo):
    build = promo.builds[2]
    Run.objects.filter(pk=build.run_id).update(status=RunStatus.FAILED)
    build.run.refresh_from_db()
    with pytest.raises(ValidationError, match="did not succeed"):
        request(promo, build, "dev")
    policy.stage_freeze(stage=promo.stages["dev"], user=promo.personas.admin, reason="hold")
    request(promo, promo.builds[0], "dev")
    with pytest.raises(ValidationError, match="already asks for this"):
        request(promo, promo.builds[0], "dev")
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[1].digest)
    with pytest.raises(ValidationError, match="already holds"):
        request(promo, promo.builds[1], "dev")


def test_only_developers_and_up_may_request(promo):
    with pytest.raises(PermissionDenied):
        request(promo, promo.builds[0], "dev", user=promo.personas.viewer)
    from django.http import Http404

    with pytest.raises(Http404):
        request(promo, promo.builds[0], "dev", user=promo.personas.outsider)


# --- Rollback and pinning ----------------------------------------------------------------------------------------------


def test_a_rollback_goes_through_the_gate_pins_the_stage_and_a_roll_forward_unpins_it(promo):
    promo.push()
    dev = promo.stages["dev"]
    promo.promote(promo.builds[0], "dev")
    promo.promote(promo.builds[1], "dev")
    assert stage_digest(promo.ref("dev")) == promo.builds[1].digest

    with pytest.raises(ValidationError, match="was never in dev"):
        promotions.promotion_rollback_request(stage=dev, definition=promo.definition, digest=promo.builds[2].digest,
                                              user=promo.personas.developer, reason="bad")
    rollback = promotions.promotion_rollback_request(stage=dev, definition=promo.definition,
                                                     digest=promo.builds[0].digest, user=promo.personas.developer,
                                                     reason="1.1 breaks logins")
    assert rollback.status == PromotionStatus.PENDING and rollback.required_approvals() == 1  # its own policy
    rollback = promo.apply(approve(rollback, promo.personas.approver))
    assert rollback.status == PromotionStatus.APPLIED
    assert stage_digest(promo.ref("dev")) == promo.builds[0].digest
    assert StageHistory.objects.current(dev, promo.definition).pins

    with pytest.raises(ValidationError, match="pinned"):
        request(promo, promo.builds[2], "dev")
    forward = promo.apply(request(promo, promo.builds[2], "dev", roll_forward=True, reason="1.2 fixes logins"))
    assert forward.status == PromotionStatus.APPLIED and forward.roll_forward
    assert not StageHistory.objects.current(dev, promo.definition).pins
    assert stage_digest(promo.ref("dev")) == promo.builds[2].digest
    assert list(StageHistory.objects.filter(stage=dev).values_list("kind", flat=True)) == [
        "promote", "rollback", "promote", "promote"]


def test_a_promotion_waits_while_another_one_of_the_same_stage_tag_is_applying(promo):
    first = request(promo, promo.builds[0], "dev")
    assert first.status == PromotionStatus.APPLYING
    second = request(promo, promo.builds[1], "dev")
    assert second.status == PromotionStatus.APPROVED and f"#{first.pk}" in second.status_note
    promo.push()
    promo.apply(first)
    assert [p.pk for p in promotions.promotions_apply_due()] == [second.pk]
    assert promo.apply(second).status == PromotionStatus.APPLIED


def test_a_promotion_whose_apply_run_was_reaped_is_marked_failed(promo):
    promotion = request(promo, promo.builds[0], "dev")
    from portal.services import run_finish

    run_finish(promotion.run, status=RunStatus.FAILED, reason="The worker running it stopped responding")
    promotions.promotions_apply_due()
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.FAILED and "stopped responding" in promotion.status_note


def _failed_after_approval(promo, stage="test"):
    """A request to `stage` (one approval) that was approved and whose application then died."""
    from portal.services import run_finish

    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = approve(request(promo, promo.builds[0], stage), promo.personas.approver)
    assert promotion.status == PromotionStatus.APPLYING
    run_finish(promotion.run, status=RunStatus.FAILED, reason="The worker running it stopped responding")
    promotions.promotions_apply_due()
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.FAILED
    return promotion


def test_a_retry_applies_again_with_the_approvals_that_still_count(promo):
    promotion = _failed_after_approval(promo)
    promotion = promotions.promotion_retry(promotion=promotion, user=promo.personas.developer)
    assert promotion.status == PromotionStatus.APPLYING and apply_runs(promotion).count() == 2


def test_a_retry_after_the_approvals_expired_asks_for_them_again(promo):
    policy.stage_update_policy(stage=promo.stages["test"], user=promo.personas.admin, approval_ttl_hours=24)
    promotion = _failed_after_approval(promo)
    Approval.objects.filter(promotion=promotion).update(created_at=timezone.now() - timedelta(hours=25))

    promotion = promotions.promotion_retry(promotion=promotion, user=promo.personas.developer)
    assert promotion.status == PromotionStatus.PENDING and "needs them again" in promotion.status_note
    assert apply_runs(promotion).count() == 1  # nothing applied on expired approvals
    assert promotion in Promotion.objects.waiting_for(promo.personas.approver)

    promotion = approve(promotion, promo.personas.approver)  # approving again completes it
    assert promotion.status == PromotionStatus.APPLYING and apply_runs(promotion).count() == 2


def test_a_retry_does_not_count_an_approver_who_lost_the_right_to_approve(promo):
    promotion = _failed_after_approval(promo)
    promo.personas.approver.memberships.update(role="viewer")
    forget_roles(promo.personas.approver)
    promotion = promotions.promotion_retry(promotion=promotion, user=promo.personas.developer)
    assert promotion.status == PromotionStatus.PENDING and apply_runs(promotion).count() == 1


def test_an_application_cancelled_before_a_worker_took_it_fails_with_the_reason(promo):
    from builds.releases.apply import promotion_apply_execute
    from portal.services import run_request_cancel

    promotion = request(promo, promo.builds[0], "dev")
    assert promotion.status == PromotionStatus.APPLYING
    run_request_cancel(run=promotion.run, user=promo.personas.developer)
    promotion_apply_execute(promotion.run_id)  # the task, when a worker takes it
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.FAILED and "Cancelled by developer" in promotion.status_note
    assert not StageHistory.objects.filter(promotion=promotion).exists()
    promotion_apply_execute(promotion.run_id)  # redelivered: still nothing
    assert AuditEvent.objects.filter(action="promotion.failed", object_id=str(promotion.pk)).count() == 1


def test_the_dashboard_counts_open_promotions(promo):
    from builds.releases.models import dashboard_counts

    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    request(promo, promo.builds[0], "test")
    assert dashboard_counts(promo.personas.developer, [promo.team])["pending_promotions"] == 1
    assert ApproverGroup.objects.count() == 0


def test_hosts_tracking_the_stage_expect_the_promoted_digest_and_show_on_the_card(promo, client_for,
                                                                                  django_capture_on_commit_callbacks):
    from hosts.services import host_create

    promo.push()
    host = host_create(team=promo.team, name="web-01", address="web-01.example.internal", actor=None,
                       stage=promo.stages["dev"], tracked_image=promo.ref("dev"))
    promotion = request(promo, promo.builds[0], "dev")
    with django_capture_on_commit_callbacks(execute=True):
        promotion = promo.apply(promotion)
    assert promotion.status == PromotionStatus.APPLIED
    host.refresh_from_db()
    assert host.expected_digest == promo.builds[0].digest
    html = shown(client_for(promo.personas.viewer), promotion.get_absolute_url())
    assert "Hosts that track dev" in html and "web-01" in html


def test_the_dashboard_tells_an_approver_what_waits_for_their_decision_and_no_one_else(promo, client_for):
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    request(promo, promo.builds[0], "test")

    page = client_for(promo.personas.approver).get("/").content.decode()
    assert 'id="inbox-callout"' in page and "1 promotion</strong> waiting for your decision" in page
    assert "/promotions/?view=inbox" in page
    for someone in (promo.personas.developer, promo.personas.viewer, promo.personas.outsider):
        assert 'id="inbox-callout"' not in client_for(someone).get("/").content.decode()


def test_a_new_team_gets_the_stages_dev_test_and_prod_in_order_each_a_tag_of_every_repository(personas):
    from builds.models import ImageDefinition
    from portal.services import team_create

    team = team_create(name="Security", actor=personas.superuser)
    assert [(s.name, s.position, s.required_approvals) for s in team.stages.all()] == [
        ("dev", 0, 0), ("test", 1, 1), ("prod", 2, 2)]
    definition = ImageDefinition(team=team, name="sec-os", repository="registry.example.com/security/sec-os")
    assert [s.reference(definition) for s in team.stages.all()] == [
        "registry.example.com/security/sec-os:dev", "registry.example.com/security/sec-os:test",
        "registry.example.com/security/sec-os:prod"]
