"""Single sign-on in a real browser: the portal (daphne, configured through its environment like a deployment) and the
loopback identity provider (django-oauth-toolkit) each in their own process. Chromium presses "Sign in with Test IdP",
signs in at the provider's form, and lands in the portal as a new user, in the team and with the role their group maps
to; with the provider stopped, the login page says so and the break-glass admin signs in with their password."""

import json
import socket
import sys

import pytest

from portal.models import Membership, Role, User
from tests.browser import browser_page, follow, log_in, screenshot, settle
from tests.helpers import free_port, wait_for
from tests.plugins.processes import PortalProcess, subprocess_env
from tests.portal.sso_fixtures import PASSWORD, make_provider

pytestmark = [pytest.mark.browser, pytest.mark.processes, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sso_portal(redis_server, tmp_path, transactional_db):
    """(portal URL, provider): a provider, and a real daphne whose environment points at it."""
    port = free_port()
    provider = make_provider(tmp_path / "provider", [f"http://127.0.0.1:{port}/login/sso/callback/"])
    env = subprocess_env(redis_server.url, SSO_PROVIDER_NAME="Test IdP",
                         OIDC_GROUP_MAPPING=json.dumps({"platform-approvers": {"platform": "approver"}}),
                         **provider.endpoints())
    server = PortalProcess("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   "portal.asgi:application"], env, tmp_path)

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(answers, timeout=30, what="daphne to listen")
    yield f"http://127.0.0.1:{port}", provider
    server.stop()
    provider.stop()


def test_a_new_user_signs_in_through_the_provider_and_lands_in_the_mapped_team_and_role(personas, sso_portal):
    url, provider = sso_portal
    with browser_page(height=1000) as page:
        page.goto(url + "/login/")
        assert page.locator("#sso-sign-in").inner_text().strip() == "Sign in with Test IdP"
        screenshot(page, "sso-login")
        page.click("#sso-sign-in")
        page.wait_for_url(provider.url + "/accounts/login/**")
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD)
        screenshot(page, "sso-provider-form")
        page.click("#provider-sign-in")
        page.wait_for_url(url + "/**")
        settle(page)
        assert "/login" not in page.url, page.content()[:2000]
        landed = page.url
        screenshot(page, "sso-landed")
        page.goto(url + "/teams/platform/")
        row = page.locator("tr", has_text="alice")
        assert row.count() == 1 and "Approver" in row.inner_text()
        screenshot(page, "sso-landed-in-team")
    # The database is read once the browser is gone (Playwright's event loop runs in this thread while it lives).
    alice = User.objects.get(username="alice")
    assert alice.oidc_subject and Membership.objects.get(user=alice).role == Role.APPROVER
    assert landed.endswith("/promotions/?view=inbox")  # an approver's landing page: the inbox


def test_with_the_provider_stopped_the_break_glass_admin_still_signs_in(personas, sso_portal):
    url, provider = sso_portal
    provider.stop()
    with browser_page() as page:
        page.goto(url + "/login/")
        follow(page, lambda: page.click("#sso-sign-in"))
        assert page.url == url + "/login/"
        assert "Test IdP does not answer right now" in page.content()
        screenshot(page, "sso-provider-down")
        log_in(page, url, "root")
        assert "/login" not in page.url
        page.goto(url + "/teams/")
        assert "Platform" in page.content()
