"""A team admin subscribes a webhook to a subset of the events in a real browser: the form lists every kind of event
(builds, promotions, hosts, retention), and the webhook keeps exactly the ones ticked."""

import pytest

from portal.models import NotificationWebhook
from tests.browser import browser_page, follow, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_team_admin_ticks_the_events_a_webhook_gets(personas, portal_server):
    with browser_page(height=1300) as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(portal_server.url + f"/teams/{personas.team.slug}/notifications/")
        boxes = page.locator("input[name=events]")
        offered = {boxes.nth(i).get_attribute("value") for i in range(boxes.count())}
        for i in range(boxes.count()):
            boxes.nth(i).uncheck()
        page.check("input[name=events][value='host.unreachable']")
        page.check("input[name=events][value='promotion.applied']")
        page.fill("input[name=name]", "on-call")
        page.fill("input[name=url]", "https://hooks.example.com/portal")
        screenshot(page, "events-webhook-form")
        follow(page, lambda: page.click("button:has-text('Add the webhook')"))
        screenshot(page, "events-webhook-saved")
    assert {"build.started", "build.succeeded", "build.failed", "promotion.requested", "promotion.approved",
            "promotion.rejected", "promotion.applied", "promotion.failed", "host.drift", "host.rollback",
            "host.unreachable", "retention.run"} <= offered
    hook = NotificationWebhook.objects.get(team=personas.team, name="on-call")
    assert sorted(hook.events) == ["host.unreachable", "promotion.applied"]
