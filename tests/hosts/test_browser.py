"""Looked at in a real browser, with screenshots in test-artifacts/: the host list, a host's page with the timeline
of upgrade -> reboot -> failed health check -> automatic rollback, and the drift view, as the help desk sees them."""

import pytest

from hosts import actions, drift, poller
from hosts.models import ActionKind, EventKind, HostEvent
from tests.browser import browser_page, log_in, screenshot
from tests.hosts.fixtures import booted_state

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_help_desk_reads_the_host_list_a_hosts_timeline_and_the_drift_view(personas, portal_server, fleet,
                                                                                  demo_images):
    digests, base = demo_images
    fleet.add("web-01", booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0"))
    fleet.add("web-02", booted_state(f"{base}:prod", digests["1.1"]["amd64"], "1.1"))
    fleet.add("api-01", booted_state(f"{base}:dev", digests["1.1"]["amd64"], "1.1"))
    hosts = fleet.start()
    poller.poll_hosts([host.pk for host in hosts.values()])
    drift.reference_digests_set(reference=f"{base}:prod", digests=digests["1.1"])
    drift.reference_digests_set(reference=f"{base}:dev", digests=digests["1.2"])
    web = hosts["web-01"]

    # The scripted sequence: stage the update, then reboot into it; its health check fails and it falls back.
    for kind in (ActionKind.UPGRADE_STAGE, ActionKind.REBOOT):
        if kind == ActionKind.REBOOT:
            fleet.fleet.set_fault("web-01", "fail_health_check", True)
            fleet.sim("web-01").state.staged.will_fail_health_check = True
        action = actions.host_action_request(host=web, kind=kind, user=personas.operator)
        actions.host_action_execute(action.pk)
        web.refresh_from_db()
    assert list(HostEvent.objects.filter(host=web).exclude(kind__in=[EventKind.FIRST_SEEN,
                                                                     EventKind.HOST_KEY_CONFIRMED])
                .order_by("at", "id").values_list("kind", flat=True)) == [
        EventKind.ACTION, EventKind.STAGED, EventKind.ACTION, EventKind.ROLLED_BACK]

    with browser_page() as page:
        log_in(page, portal_server.url, "helpdesk")
        page.goto(portal_server.url + "/hosts/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # the navigation fits, badge and all
        listed = page.locator("main").inner_text()
        assert all(name in listed for name in ("web-01", "web-02", "api-01"))
        assert screenshot(page, "hosts-list-helpdesk").stat().st_size > 10_000

        page.goto(portal_server.url + web.get_absolute_url())
        text = page.locator("main").inner_text()
        assert "boots next" in text.lower() and "the same deployment it runs now" in text.lower()  # in plain words
        assert "Automatic rollback" in text and "operator" in text  # the timeline, with the action behind it
        assert "last raw status" in text.lower()
        assert "/actions/" not in page.content()  # the help desk gets no actions
        assert screenshot(page, "host-timeline-helpdesk").stat().st_size > 10_000

        page.goto(portal_server.url + "/hosts/drift/")
        drift_view = page.locator("main").inner_text()
        assert "web-01" in drift_view and "api-01" in drift_view and "web-02" not in drift_view
        assert screenshot(page, "hosts-drift-helpdesk").stat().st_size > 10_000
