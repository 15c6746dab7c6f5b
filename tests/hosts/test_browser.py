"""Looked at in a real browser, with screenshots in test-artifacts/: the approver's inbox and the approval card
(promotions), and the host list, a host's page with the timeline of upgrade -> reboot -> failed health check ->
automatic rollback, and the drift view (hosts), as the help desk sees them."""

import pytest
from django.urls import reverse

from builds.releases import services as promotions
from builds.releases.models import StageHistory
from hosts import poller, services
from hosts.models import ActionKind, EventKind, HostEvent
from tests.browser import browser_page, log_in, screenshot
from tests.hosts_fixtures import booted_state

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


def test_the_help_desk_reads_the_host_list_a_hosts_timeline_and_the_drift_view(personas, portal_server, fleet,
                                                                                  demo_images):
    digests, base = demo_images
    fleet.add("web-01", booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0"))
    fleet.add("web-02", booted_state(f"{base}:prod", digests["1.1"]["amd64"], "1.1"))
    fleet.add("api-01", booted_state(f"{base}:dev", digests["1.1"]["amd64"], "1.1"))
    hosts = fleet.start()
    poller.poll_hosts([host.pk for host in hosts.values()])
    poller.reference_digests_set(reference=f"{base}:prod", digests=digests["1.1"])
    poller.reference_digests_set(reference=f"{base}:dev", digests=digests["1.2"])
    web = hosts["web-01"]

    # The scripted sequence: stage the update, then reboot into it; its health check fails and it falls back.
    for kind in (ActionKind.UPGRADE_STAGE, ActionKind.REBOOT):
        if kind == ActionKind.REBOOT:
            fleet.fleet.set_fault("web-01", "fail_health_check", True)
            fleet.sim("web-01").state.staged.will_fail_health_check = True
        action = services.host_action_request(host=web, kind=kind, user=personas.operator)
        services.host_action_execute(action.pk)
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
        drift = page.locator("main").inner_text()
        assert "web-01" in drift and "api-01" in drift and "web-02" not in drift
        assert screenshot(page, "hosts-drift-helpdesk").stat().st_size > 10_000
