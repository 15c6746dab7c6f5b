"""An enrollment end to end in a real browser, with screenshots in test-artifacts/: a team admin creates a token, a
simulated host behind NAT (the real agent script, a bootc on PATH that follows the simulator) enrolls with it, the admin
approves it, the host reports, and an upgrade ordered on its page is picked up by the agent, which reboots the host
into the newer image."""

import pytest

from hosts.models import Host, HostAction
from portal.models import RunStatus
from tests.browser import browser_page, follow, log_in, screenshot, settle
from tests.hosts.reportin_fixtures import EdgeHost

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_enrolls_approves_and_upgrades_a_host_that_reports_in(personas, portal_server, demo_images,
                                                                       tmp_path):
    digests, base = demo_images
    with browser_page() as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/teams/{personas.team.slug}/")
        page.get_by_role("link", name="Hosts that report in").click()
        page.fill("input[name=name]", "Shop appliances, batch 1")
        page.select_option("select[name=stage]", label="dev")
        page.select_option("select[name=expires_in_hours]", label="in 1 day")
        follow(page, page.get_by_role("button", name="Create enrollment token").click)
        secret = page.input_value("#token-secret")
        assert secret.startswith("ime_") and "systemctl enable portal-agent.timer" in page.input_value("#containerfile")
        assert screenshot(page, "reportin-token-created").stat().st_size > 10_000

        edge = EdgeHost(tmp_path, reference=f"{base}:dev", digest=digests["1.1"]["amd64"], portal_url=portal_server.url,
                        token=secret)
        enrolled = edge.tick()
        assert "waiting for an admin to approve it" in enrolled.stderr

        page.reload()
        pending = page.locator("#pending-hosts").inner_text()
        assert "edge-01" in pending and secret not in page.content()
        assert screenshot(page, "reportin-pending-approval").stat().st_size > 10_000
        host_url = portal_server.url + page.locator("#pending-hosts a", has_text="edge-01").get_attribute("href")
        follow(page, page.get_by_role("button", name="Approve edge-01").click)
        assert "edge-01 is approved" in page.locator("main").inner_text()

        assert edge.tick().returncode == 0
        page.goto(host_url)
        text = page.locator("main").inner_text()
        assert "reports in" in page.locator("#host-mode").inner_text()
        assert "Read status now" not in text
        assert screenshot(page, "reportin-host-page").stat().st_size > 10_000

        page.goto(host_url.rstrip("/") + "/actions/upgrade_apply/")
        follow(page, page.get_by_role("button", name="Yes, upgrade and reboot").click)
        assert "waits for the host's agent" in page.locator("main").inner_text()

        picked = edge.tick()
        assert picked.returncode == 0 and "rebooting" in picked.stderr, picked.stderr
        assert edge.tick().returncode == 0  # the report after the reboot

        page.goto(host_url)
        settle(page)
        text = page.locator("main").inner_text()
        assert "Queued for next boot" in text and "New deployment booted" in text
        assert screenshot(page, "reportin-upgraded-by-agent").stat().st_size > 10_000

    # The database is read once the browser is closed (Playwright's sync API holds the thread's event loop).
    host = Host.objects.get(team=personas.team, name="edge-01")
    assert host.booted_digest == digests["1.2"]["amd64"] and host.approved_by == personas.admin
    assert HostAction.objects.get(host=host).run.status == RunStatus.SUCCEEDED
