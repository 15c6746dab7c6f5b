"""A person in a real browser: log in as the developer persona, see the dashboard, use the navigation."""

import pytest

from tests.browser import browser_page, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_developer_logs_in_and_finds_their_way_around(personas, portal_server):
    with browser_page() as page:
        log_in(page, portal_server.url, "developer")
        assert page.url == portal_server.url + "/"
        assert page.locator("h1").inner_text() == "Dashboard"
        nav = page.locator("nav.portal-nav")
        assert [t.strip() for t in nav.locator(".navbar-nav.me-auto .nav-link").all_inner_texts()] == [
            "Dashboard", "Images", "Builds", "Promotions", "Hosts", "Audit"]
        assert "Platform" in page.locator("#team-switcher").inner_text()
        assert page.locator(".tile").count() == 6
        path = screenshot(page, "dashboard-developer")
        assert path.stat().st_size > 10_000

        for label, heading in (("Images", "Image definitions"), ("Builds", "Builds"), ("Promotions", "Promotions"),
                               ("Hosts", "Hosts"), ("Audit", "Audit trail")):
            nav.get_by_role("link", name=label).click()
            page.wait_for_load_state("networkidle")
            assert page.locator("h1").first.inner_text() == heading

        # The audit page shows the login we just made.
        assert "developer logged in" in page.content()

        page.select_option("#team-switcher", "platform")
        page.wait_for_load_state("networkidle")
        assert page.locator("#team-switcher option:checked").inner_text() == "Platform"


def test_a_wrong_password_shows_a_readable_error(personas, portal_server):
    with browser_page() as page:
        log_in(page, portal_server.url, "developer", password="wrong")
        assert "do not match" in page.locator(".alert, .invalid-feedback, form").first.inner_text()
        screenshot(page, "login-failed")
