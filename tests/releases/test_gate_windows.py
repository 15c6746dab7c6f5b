"""The gate in time: a freeze holds approved promotions until it is lifted, change windows (past midnight too) make
them wait for the next one, approvals that expire while waiting send a promotion back, and an emergency override
needs its extra approval."""

from datetime import UTC, timedelta
from datetime import time as clock

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from builds.releases import policy
from builds.releases import services as promotions
from builds.releases.models import PromotionStatus, StageHistory
from portal.models import AuditEvent
from tests.releases.fixtures import stage_digest
from tests.releases.gate_steps import apply_runs, approve, request

pytestmark = pytest.mark.django_db


# --- Freezes, windows and the emergency override ----------------------------------------------------------------------


def test_a_freeze_holds_an_approved_promotion_until_it_is_lifted(promo):
    promo.push()
    promo.promote(promo.builds[0], "dev")
    freeze = policy.stage_freeze(stage=promo.stages["test"], user=promo.personas.admin, reason="quarter close")
    promotion = approve(request(promo, promo.builds[0], "test"), promo.personas.approver)

    assert promotion.status == PromotionStatus.APPROVED and "frozen" in promotion.status_note
    assert not apply_runs(promotion).exists()
    assert promotions.promotions_apply_due() == []

    policy.stage_unfreeze(freeze=freeze, user=promo.personas.admin)
    assert [p.pk for p in promotions.promotions_apply_due()] == [promotion.pk]
    promotion = promo.apply(promotion)
    assert promotion.status == PromotionStatus.APPLIED
    assert stage_digest(promo.ref("test")) == promo.builds[0].digest


def test_a_freeze_blocks_a_promotion_unless_the_emergency_override_is_approved_with_an_extra_approval(promo):
    promo.push()
    promo.promote(promo.builds[0], "dev")
    policy.stage_freeze(stage=promo.stages["test"], user=promo.personas.admin, reason="release freeze",
                            ends_at=timezone.now() + timedelta(days=3))
    with pytest.raises(ValidationError, match="own reason"):
        request(promo, promo.builds[0], "test", emergency=True)
    promotion = request(promo, promo.builds[0], "test", emergency=True, emergency_reason="CVE-2024-1234 fix")
    assert promotion.required_approvals() == 2  # test needs 1, the override 1 more

    promotion = approve(promotion, promo.personas.approver)
    assert promotion.status == PromotionStatus.PENDING
    promotion = approve(promotion, promo.personas.approver2)
    assert promotion.status == PromotionStatus.APPLYING
    promotion = promo.apply(promotion)
    assert promotion.status == PromotionStatus.APPLIED
    assert stage_digest(promo.ref("test")) == promo.builds[0].digest
    assert AuditEvent.objects.filter(action="promotion.override_request", object_id=str(promotion.pk)).exists()
    used = AuditEvent.objects.get(action="promotion.override_used", object_id=str(promotion.pk))
    assert "release freeze" in used.summary and "CVE-2024-1234" in used.summary


def test_outside_its_change_windows_an_approved_promotion_waits_for_the_next_window(promo):
    test = promo.stages["test"]
    now = timezone.now()
    # A one-hour window that opened two hours ago today: closed now.
    opened = (now - timedelta(hours=2)).replace(second=0, microsecond=0)
    policy.change_window_add(stage=test, user=promo.personas.admin, weekdays=[opened.weekday()],
                                 starts=opened.time(), ends=(opened + timedelta(hours=1)).time())
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = approve(request(promo, promo.builds[0], "test"), promo.personas.approver)
    assert promotion.status == PromotionStatus.APPROVED and "change windows" in promotion.status_note
    assert promotions.promotions_apply_due(now=now) == []
    assert [p.pk for p in promotions.promotions_apply_due(now=opened + timedelta(minutes=30))] == [promotion.pk]


def test_change_windows_may_run_past_midnight():
    from builds.releases.models import ChangeWindow

    window = ChangeWindow(weekdays=[4], starts=clock(22, 0), ends=clock(2, 0))  # Friday night
    friday = timezone.datetime(2025, 6, 6, 23, 0, tzinfo=UTC)
    assert window.contains(friday) and window.contains(friday + timedelta(hours=2, minutes=30)) is True
    assert not window.contains(friday + timedelta(hours=3, minutes=30))
    assert not window.contains(friday - timedelta(hours=2))
    assert window.contains(timezone.datetime(2025, 6, 6, 20, 30, tzinfo=UTC), "America/New_York") is False
    assert window.contains(timezone.datetime(2025, 6, 7, 2, 30, tzinfo=UTC), "America/New_York") is True


def test_approvals_that_expire_while_waiting_for_a_window_send_it_back_to_pending(promo):
    test = promo.stages["test"]
    policy.stage_update_policy(stage=test, user=promo.personas.admin, approval_ttl_hours=1)
    policy.stage_freeze(stage=test, user=promo.personas.admin, reason="freeze")
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest)
    promotion = approve(request(promo, promo.builds[0], "test"), promo.personas.approver)
    assert promotion.status == PromotionStatus.APPROVED
    promotions.promotions_apply_due(now=timezone.now() + timedelta(hours=2))
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.PENDING and "expired" in promotion.status_note
