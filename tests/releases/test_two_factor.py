"""A team that requires a second factor: approving a promotion needs a sign-in verified with one, and an approval
given that way still counts when the quorum is counted again later (from the database, where no sign-in exists)."""

import pytest
from django.urls import reverse

from builds.releases import gate
from builds.releases import services as promotions
from builds.releases.models import Approval, PromotionStatus, StageHistory
from tests.portal.two_factor import enroll, verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(promo):
    """A request to promote build 2 to test, waiting for one approval, in a team that requires a second factor."""
    team = promo.personas.team
    type(team).objects.filter(pk=team.pk).update(require_two_factor=True)
    for stage in ("dev", "test"):
        StageHistory.objects.create(stage=promo.stages[stage], definition=promo.definition,
                                    digest=promo.builds[0].digest, build=promo.builds[0])
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[1].digest,
                                build=promo.builds[1])
    return promotions.promotion_request(definition=promo.definition, build=promo.builds[1],
                                        target_stage=promo.stages["test"], user=promo.personas.developer,
                                        reason="nginx replaces curl")


def approve(client, promotion):
    return client.post(reverse("releases:promotion_approve", args=[promotion.pk]), {"digest": promotion.digest, "comment": "ok"})


def test_an_approver_signed_in_without_it_is_refused_and_nothing_is_recorded(client_for, pending, promo):
    client = client_for(promo.personas.approver)
    card = client.get(reverse("releases:promotion_detail", args=[pending.pk])).content.decode()
    assert "requires approvers and admins to sign in with a second factor" in card
    response = approve(client, pending)
    assert response.status_code == 403
    assert b"requires approvers and admins to sign in with a second factor" in response.content
    assert not Approval.objects.exists()


def test_an_approver_signed_in_with_it_approves_and_the_approval_counts(pending, promo):
    client = verified_client(enroll(promo.personas.approver))
    assert approve(client, pending).status_code == 302
    pending.refresh_from_db()
    assert pending.status == PromotionStatus.APPLYING
    assert [a.approver for a in gate.quorum(pending).counted] == [promo.personas.approver]
