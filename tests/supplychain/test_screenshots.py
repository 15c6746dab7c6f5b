"""The supply chain pages as a person sees them, in Chromium, on real data: seed images pushed to the session's
registry, one signed by skopeo with a key the portal generated, an OSV feed, a promotion waiting for approval into a
stage that requires the key, and one that containers/image refused. Screenshots land in test-artifacts/ to be looked
at; the assertions check what each must show."""

import pytest

from builds.supplychain import services
from builds.supplychain.signing import signature_execute
from tests.browser import browser_page, log_in, screenshot
from tests.supplychain.osv import feed_bytes
from tests.supplychain.test_signing import lose_signatures

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def sign(promo, build, key):
    signature = services.signature_request(build=build, key=key, user=promo.personas.developer)
    signature_execute(signature.run_id)


@pytest.fixture
def world(personas, promo, eager_tasks):
    promo.push()
    release = services.signing_key_generate(team=personas.team, user=personas.admin, name="release-2026")
    services.signing_key_generate(team=personas.team, user=personas.admin, name="ci")
    services.feed_import(name="debian-bookworm", data=feed_bytes(), source="debian-bookworm.osv.json",
                         user=personas.superuser)
    first, second, third = promo.builds
    sign(promo, first, release)
    sign(promo, second, release)
    sign(promo, third, release)
    promo.promote(first, "dev")
    promo.promote(first, "test", approvers=[personas.approver])
    for stage in ("dev", "test"):
        services.stage_signing_policy_set(stage=promo.stages[stage], key=release, user=personas.admin)
    promo.promote(second, "dev")
    waiting = promo.promote(second, "test", approvers=(), apply=False)
    lose_signatures(promo, third)  # the portal's records say signed; containers/image finds nothing and refuses
    refused = promo.promote(third, "dev", expect_applied=False)
    assert refused.status == "failed" and "Source image rejected" in refused.status_note
    return {"waiting": waiting, "refused": refused, "second": second}


def test_the_supply_chain_pages_in_a_browser(personas, portal_server, world, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    with browser_page() as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/teams/{personas.team.slug}/signing-keys/")
        page.wait_for_load_state("networkidle")
        body = page.inner_text("body")
        assert "release-2026" in body and "ci" in body and "Generate a key" in body
        assert "a signature with release-2026" in page.locator("#stage-test").inner_text()
        screenshot(page, "supplychain-keys")

        page.goto(portal_server.url + world["waiting"].get_absolute_url())
        page.wait_for_load_state("networkidle")
        trust = page.locator("#promotion-trust").inner_text()
        assert "test requires a signature with release-2026: this digest has one" in trust
        assert "Signed with release-2026" in trust
        assert "CVE-2026-1002" in trust and "CVE-2026-1001" in trust and "Fixed by this promotion" in trust
        screenshot(page, "supplychain-approval-card")

        page.goto(portal_server.url + world["refused"].get_absolute_url())
        page.wait_for_load_state("networkidle")
        body = page.inner_text("body")
        assert "containers/image refused this digest" in body
        screenshot(page, "supplychain-refused-promotion")

        page.goto(f"{portal_server.url}/builds/{world['second'].pk}/supply-chain/")
        page.wait_for_load_state("networkidle")
        body = page.inner_text("body")
        assert "release-2026" in body and "signed" in body and "CVE-2026-1003" in body and "1.22.1-10" in body
        screenshot(page, "supplychain-build")

        page.goto(f"{portal_server.url}/advisories/CVE-2026-1002/")
        page.wait_for_load_state("networkidle")
        body = page.inner_text("body")
        assert "2 builds, 1 held by a stage now" in body
        screenshot(page, "supplychain-cve")
