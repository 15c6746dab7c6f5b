"""The approver's inbox and the approval card in a real browser, with screenshots in test-artifacts/."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from builds.releases import services as promotions
from builds.releases.models import StageHistory
from tests.browser import browser_page, follow, log_in, screenshot
from tests.portal.test_csp import serious_accessibility_violations

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
        # In the dark theme: the package rows (added, removed) and the size delta keep their meaning and contrast.
        page.emulate_media(color_scheme="dark")
        expect(page.locator("html")).to_have_attribute("data-bs-theme", "dark")
        added_row = page.locator(".pkg-table tr.table-success").first
        assert added_row.evaluate("e => getComputedStyle(e.cells[1]).backgroundColor") == "rgb(15, 45, 31)"
        assert serious_accessibility_violations(page) == []
        screenshot(page, "promotion-card-approver-dark")
        page.emulate_media(color_scheme="light")


def test_a_request_that_would_move_test_back_is_red_and_approved_only_with_the_stage_typed(personas, portal_server,
                                                                                           promo):
    from builds.releases.models import Approval, PromotionStatus

    b1, b2, b3 = promo.builds
    for build in (b1, b2, b3):
        StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=build.digest,
                                    build=build)
    StageHistory.objects.create(stage=promo.stages["test"], definition=promo.definition, digest=b1.digest, build=b1)
    older = promotions.promotion_request(definition=promo.definition, build=b2, target_stage=promo.stages["test"],
                                         user=personas.developer, reason="the 1.1 packages")
    newer = promotions.promotion_request(definition=promo.definition, build=b3, target_stage=promo.stages["test"],
                                         user=personas.developer, reason="the 1.2 packages")
    StageHistory.objects.create(stage=promo.stages["test"], definition=promo.definition, digest=b3.digest, build=b3)
    backwards = promotions.promotion_request(definition=promo.definition, build=b2, target_stage=promo.stages["test"],
                                             user=personas.developer, reason="1.2 broke the login page")
    with browser_page() as page:
        log_in(page, portal_server.url, "approver")
        page.goto(portal_server.url + older.get_absolute_url())
        superseded = page.locator(".superseded")
        assert f"Superseded by #{newer.pk}" in superseded.inner_text()
        assert page.locator("button[formaction$='/approve/']").count() == 0
        assert screenshot(page, "promotion-superseded").stat().st_size > 10_000
        page.emulate_media(color_scheme="dark")
        expect(page.locator("html")).to_have_attribute("data-bs-theme", "dark")  # follows the system's change
        screenshot(page, "promotion-superseded-dark")
        page.emulate_media(color_scheme="light")

        page.goto(portal_server.url + reverse("releases:promotion_list") + "?view=inbox")
        assert "would move test back from build 3 to build 2" in page.locator("#promotion-rows").inner_text()

        page.goto(portal_server.url + backwards.get_absolute_url())
        warning = page.locator(".alert.moves-back")
        assert "would move test back from build 3 to build 2" in warning.inner_text()
        assert warning.evaluate("e => getComputedStyle(e).color") != page.locator("main").evaluate(
            "e => getComputedStyle(e).color")  # red, not the body's colour
        assert screenshot(page, "promotion-moves-back").stat().st_size > 10_000
        page.emulate_media(color_scheme="dark")
        screenshot(page, "promotion-moves-back-dark")
        page.emulate_media(color_scheme="light")
        approve = page.locator("button[formaction$='/approve/']")
        approve.click()  # nothing typed: the browser does not send the form
        assert page.url.endswith(backwards.get_absolute_url())
        assert page.locator("#id_confirm").evaluate("e => !e.validity.valid")
        assert "Approved" not in page.locator("main").inner_text()
        page.fill("#id_confirm", "test")
        follow(page, approve.click)
        assert "Approved" in page.locator("main").inner_text()
    # (The database is read once the browser is closed: Playwright's sync API runs an event loop in this thread.)
    assert list(Approval.objects.filter(promotion=backwards).values_list("approver", flat=True)) == [personas.approver.pk]
    backwards.refresh_from_db()
    assert backwards.status != PromotionStatus.PENDING


def test_moving_a_stage_without_approvals_back_asks_the_developer_to_type_it(personas, portal_server, promo):
    from builds.releases.models import Promotion, PromotionStatus, Stage

    b1, b2, b3 = promo.builds
    for build in (b1, b2, b3):
        StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=build.digest,
                                    build=build)
    StageHistory.objects.create(stage=promo.stages["test"], definition=promo.definition, digest=b1.digest, build=b1)
    older = promotions.promotion_request(definition=promo.definition, build=b2, target_stage=promo.stages["test"],
                                         user=personas.developer, reason="the 1.1 packages")
    promotions.promotion_request(definition=promo.definition, build=b3, target_stage=promo.stages["test"],
                                 user=personas.developer, reason="the 1.2 packages")
    StageHistory.objects.create(stage=promo.stages["test"], definition=promo.definition, digest=b3.digest, build=b3)
    Stage.objects.filter(pk=promo.stages["test"].pk).update(required_approvals=0)
    with browser_page() as page:
        log_in(page, portal_server.url, "developer")
        page.goto(portal_server.url + older.get_absolute_url())
        form = page.locator("form.moves-back-confirm")
        assert "would move test back from build 3 to build 2 at once" in form.inner_text()
        assert serious_accessibility_violations(page) == []
        screenshot(page, "promotion-reopen-moves-back")
        page.emulate_media(color_scheme="dark")
        expect(page.locator("html")).to_have_attribute("data-bs-theme", "dark")
        assert serious_accessibility_violations(page) == []
        screenshot(page, "promotion-reopen-moves-back-dark")
        page.emulate_media(color_scheme="light")
        form.locator("button").click()  # nothing typed: the browser does not send the form
        assert page.url.endswith(older.get_absolute_url())
        page.fill("#id_reopen_confirm", "test")
        follow(page, form.locator("button").click)
        screenshot(page, "promotion-reopened-moved-back")
    older.refresh_from_db()
    assert older.status in (PromotionStatus.APPLYING, PromotionStatus.APPROVED, PromotionStatus.APPLIED,
                            PromotionStatus.FAILED)  # it no longer waits: nobody had to approve it
    assert Promotion.objects.filter(pk=older.pk, superseded_by__isnull=True).exists()
