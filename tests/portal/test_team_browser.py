"""A team's admin manages its members in a real browser."""

import pytest

from portal.models import Membership, Role
from tests.browser import browser_page, follow, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_admin_adds_a_member_from_the_team_page(personas, portal_server):
    assert not Membership.objects.filter(team=personas.team, user=personas.outsider).exists()
    with browser_page() as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/teams/{personas.team.slug}/")
        page.fill("#member-add input[name=user]", "outsider")
        page.select_option("#member-add select[name=role]", Role.VIEWER)
        follow(page, page.get_by_role("button", name="Add member").click)
        assert "Added outsider to Platform as viewer." in page.locator(".alert").first.inner_text()
        assert "outsider" in page.locator("table").first.inner_text()
        screenshot(page, "team-member-added")

        page.fill("#member-add input[name=user]", "nobody-here")
        follow(page, page.get_by_role("button", name="Add member").click)
        assert "No active user is called 'nobody-here'" in page.locator(".alert").first.inner_text()
    assert Membership.objects.get(team=personas.team, user=personas.outsider).role == Role.VIEWER
