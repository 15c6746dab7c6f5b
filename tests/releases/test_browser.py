"""The approver's inbox and the approval card in a real browser, with screenshots in test-artifacts/."""

import pytest
from django.urls import reverse

from builds.releases import services as promotions
from builds.releases.models import StageHistory
from tests.browser import browser_page, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_approver_finds_the_request_in_the_inbox_and_reads_the_approval_card(personas, portal_server, promo):
    for stage in ("dev", "test"):
        StageHistory.objects.create(stage=promo.stages[stage], definition=promo.definition,
                                    digest=promo.builds[0].digest, build=promo.builds[0])
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[1].digest,
                                build=promo.builds[1])
    pending = promotions.promotion_request(definition=promo.definition, build=promo.builds[1],
                                           target_stage=promo.stages["test"], user=personas.developer,
                                           reason="nginx replaces curl; smoke tests green")
    with browser_page() as page:
        log_in(page, portal_server.url, "approver")
        assert page.locator('[title="Waiting for your approval"]').first.inner_text().strip() == "1"
        page.goto(portal_server.url + reverse("releases:promotion_list"))
        inbox = page.locator("main").inner_text()
        assert "Waiting for you" in inbox and f"#{pending.pk}" in inbox and "web-os" in inbox
        assert screenshot(page, "promotions-inbox-approver").stat().st_size > 10_000

        page.goto(portal_server.url + pending.get_absolute_url())
        text = page.locator("main").inner_text()
        assert "What changes in test" in text and "nginx" in text and "curl" in text
        assert "nginx replaces curl; smoke tests green" in text
        assert page.locator("button[formaction$='/approve/']").count() == 1
        # Who tracks the stage comes from hosts, loaded into the card once it is shown.
        assert "Hosts that track test" in page.locator("#promotion-hosts").inner_text()
        assert screenshot(page, "promotion-card-approver").stat().st_size > 10_000
