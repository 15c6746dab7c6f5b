"""Boot tests in a real browser: the VM's serial console streaming into a boot test's page while it boots (real QEMU,
the worker's part running in a thread of this process, daphne pushing the run's log over its websocket), the checks over
SSH on the page once it passed, a definition's plan, and the approval card of a promotion the gate refused, with the
panic's console lines. Each page is screenshotted (var/test-artifacts) to be looked at."""

import pytest

from builds.diskimages import bootplans, bootrun
from builds.diskimages import services_boottests as boottests
from builds.diskimages.models import BootTest
from builds.releases import services as promotions
from builds.releases.models import PromotionStatus
from portal.models import RunStatus
from tests.browser import browser_page, screenshot, sign_in
from tests.diskimages.bootimages import PANIC, SSH_GOOD
from tests.helpers import start_in_thread, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def log_text(page):
    return page.locator("#log-lines").inner_text()


def test_a_boot_streams_its_console_into_the_page_and_a_refused_promotion_shows_the_panic_on_its_card(
        build_image, bootable_ssh_base, boot_settings, personas, portal_server, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls next to Playwright's event loop
    boot_settings.BOOT_TEST_SOAK_SECONDS = 3
    good = build_image(SSH_GOOD, name="web-os")
    bootplans.boot_test_plan_save(definition=good.definition, user=personas.developer, ssh_checks=True, soak_seconds=3,
                                  test_script="test -s /root/.ssh/authorized_keys && echo web-os answers")
    boot_test = boottests.boot_test_start(build=good, user=personas.developer)
    with browser_page(height=1000) as page:
        sign_in(page, portal_server.url, "developer")
        page.goto(portal_server.url + boot_test.get_absolute_url())
        page.wait_for_selector("#log-conn[data-state=live]", timeout=60_000)
        thread = start_in_thread(bootrun.boot_test_execute, boot_test.pk)
        # The console arrives while the VM boots: the kernel's own lines, then the image's init.
        wait_for(lambda: "test-os: init started" in log_text(page), timeout=180, what="the init's line in the page")
        assert "Linux version" in log_text(page)
        assert BootTest.objects.with_related().get(pk=boot_test.pk).run.status == RunStatus.RUNNING
        screenshot(page, "boottest-live-console")
        thread.join(300)
        wait_for(lambda: page.locator("#boottest-live .alert-success").count() == 1, timeout=30,
                 what="the page to show the pass")
        wait_for(lambda: "web-os answers" in page.locator("#boottest-live").inner_text(), timeout=10,
                 what="the checks' results under the pass")
        text = page.locator("#boottest-live").inner_text()
        assert "Checks over SSH" in text and "After the soak time (3 s)" in text
        assert "bootc status reports the digest" in text and "web-os answers" in text
        screenshot(page, "boottest-ssh-checks-passed")
        page.goto(portal_server.url + f"/boot-tests/definitions/{good.definition.pk}/plan/")
        screenshot(page, "boottest-plan")

    dev = personas.team.stages.get(name="dev")
    dev.require_boot_test = True
    dev.save(update_fields=["require_boot_test"])
    bad = build_image(PANIC, name="bad-os")
    refused = promotions.promotion_request(definition=bad.definition, build=bad, target_stage=dev,
                                           user=personas.developer, reason="try it")
    bootrun.boot_test_execute(BootTest.objects.get(digest=bad.digest).pk)
    promotions.promotions_apply_due()
    refused.refresh_from_db()
    assert refused.status == PromotionStatus.FAILED
    with browser_page(height=1000) as page:
        sign_in(page, portal_server.url, "approver")
        page.goto(portal_server.url + refused.get_absolute_url())
        card = page.locator("main").inner_text()
        assert "The kernel panicked." in card and "Kernel panic - not syncing" in card
        screenshot(page, "boottest-approval-card-refused")
