"""A person in a real browser: log in as the developer persona, see the dashboard, use the navigation."""

import re

import pytest

from tests.browser import browser_page, follow, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_developer_logs_in_and_finds_their_way_around(personas, portal_server):
    with browser_page() as page:
        log_in(page, portal_server.url, "developer")
        assert page.url == portal_server.url + "/"
        assert page.locator("h1").inner_text() == "Dashboard"
        nav = page.locator("nav.portal-nav")
        assert [" ".join(t.split()) for t in nav.locator(".navbar-nav.me-auto .nav-link").all_inner_texts()] == [
            "Dashboard", "Images", "Builds", "Disk images", "Promotions", "Hosts", "Audit"]
        assert "Platform" in page.locator("#team-switcher").inner_text()
        assert page.locator(".tile").count() == 6
        path = screenshot(page, "dashboard-developer")
        assert path.stat().st_size > 10_000

        for label, heading in (("Images", "Image definitions"), ("Builds", "Builds"),
                               (re.compile(r"^\W*Disk\s+images$"), "Disk images"),  # a no-break space keeps it on one line
                               ("Promotions", "Promotions"), ("Hosts", "Hosts"), ("Audit", "Audit trail")):
            name = label if isinstance(label, re.Pattern) else re.compile(rf"^\W*{label}$")  # the icon comes first
            follow(page, nav.get_by_role("link", name=name).click)
            assert page.locator("h1").first.inner_text() == heading

        # The audit page shows the login we just made.
        assert "developer logged in" in page.content()

        # Choosing a team posts the switcher's form (data-autosubmit): the page the portal answers with shows it chosen.
        follow(page, lambda: page.select_option("#team-switcher", "platform"))
        assert page.locator("#team-switcher option:checked").inner_text() == "Platform"


def test_a_wrong_password_shows_a_readable_error(personas, portal_server):
    with browser_page() as page:
        log_in(page, portal_server.url, "developer", password="wrong")
        assert "do not match" in page.locator(".alert, .invalid-feedback, form").first.inner_text()
        screenshot(page, "login-failed")


def test_the_help_desk_dashboard_shows_every_teams_hosts(personas, portal_server):
    from hosts.services import host_create

    host_create(team=personas.other_team, name="web-01", address="192.0.2.10", actor=None)
    with browser_page() as page:
        log_in(page, portal_server.url, "helpdesk")
        assert page.url == portal_server.url + "/hosts/"  # the help desk lands on the host search
        page.goto(portal_server.url + "/")
        assert "not in any team yet" not in page.content()
        assert page.locator("#helpdesk-note").is_visible()
        assert page.locator(".tile-label").all_inner_texts() == ["Hosts", "Hosts drifting", "Runs in progress"]
        assert page.locator(".tile .tile-value").first.inner_text() == "1"
        menu = page.locator("nav.portal-nav .navbar-nav.me-auto .nav-link").all_inner_texts()
        assert [" ".join(t.split()) for t in menu] == ["Dashboard", "Hosts", "Audit"]  # no team work to show
        screenshot(page, "dashboard-helpdesk")
