"""The second factor in a real browser: an approver of a team that requires it is asked to set it up at sign-in, scans
(here: reads) the secret, confirms with a code, keeps the backup codes, and signs in with one the next time."""

import base64

import pytest

from portal.models import Team
from tests.browser import browser_page, follow, log_in, screenshot
from tests.portal.two_factor import App

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_approver_sets_up_a_second_factor_and_signs_in_with_it(personas, portal_server):
    Team.objects.filter(pk=personas.team.pk).update(require_two_factor=True)
    with browser_page(height=1100) as page:
        log_in(page, portal_server.url, "approver")
        assert page.url == portal_server.url + "/account/two-factor/"
        assert "Platform requires approvers and admins to sign in with a second factor" in page.content()
        assert page.locator("svg.qr-code").is_visible()
        screenshot(page, "two-factor-setup")

        secret = page.locator("#totp-secret").inner_text()
        app = App(personas.approver, base64.b32decode(secret.replace(" ", "")).hex())
        page.fill("input[name=code]", app.code())
        follow(page, lambda: page.click("button:has-text('Turn on two-factor sign-in')"))
        codes = page.locator("code.backup-code").all_inner_texts()
        assert len(codes) == 10
        assert page.locator("#two-factor-notice").count() == 0
        screenshot(page, "two-factor-backup-codes")

        page.goto(portal_server.url + "/logout/")
        follow(page, lambda: page.click("main form button"))
        log_in(page, portal_server.url, "approver")
        assert page.url == portal_server.url + "/login/verify/"
        page.fill("input[name=code]", "123456")
        follow(page, lambda: page.click("main form button:has-text('Sign in')"))
        assert "That code is not right" in page.content()
        screenshot(page, "two-factor-verify-wrong-code")

        page.wait_for_timeout(150)  # django-otp's wait after one wrong code: 0.1 s on the tests' server (web_settings)
        page.fill("input[name=code]", codes[0])
        follow(page, lambda: page.click("main form button:has-text('Sign in')"))
        assert page.url == portal_server.url + "/promotions/?view=inbox"  # signed in: an approver lands on the inbox
        assert "9 are left" in page.content()
        assert page.locator("#two-factor-notice").count() == 0
        screenshot(page, "two-factor-signed-in")

        page.goto(portal_server.url + "/teams/platform/")
        assert "Required" in page.locator("#team-two-factor").inner_text()
        screenshot(page, "team-two-factor")
