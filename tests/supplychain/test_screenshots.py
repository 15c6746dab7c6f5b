"""The supply chain pages as a person sees them, in Chromium, on real data: seed images pushed to the session's
registry, one signed by skopeo with a key the portal generated, an OSV feed, a promotion waiting for approval into a
stage that requires the key, and one that containers/image refused. Screenshots land in test-artifacts/ to be looked
at; the assertions check what each must show."""

import pytest

from builds.supplychain import feeds, services
from builds.supplychain.signing import signature_execute
from hosts.models import Host, HostState
from tests.browser import browser_page, follow, log_in, screenshot, settle
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
    services.stage_vulnerability_policy_set(stage=promo.stages["test"], refuse_from="high", user=personas.admin)
    waiting = promo.promote(second, "test", approvers=(), apply=False)
    feeds.feed_source_set(name="debian-bookworm", url="https://mirror.example.internal/osv/Debian/all.zip",
                          refresh_hours=6, user=personas.superuser)
    hosts = [Host(team=personas.team, name=f"{stage}-{i:02d}", address="127.0.0.1", stage=promo.stages[stage],
                  state=HostState.UP_TO_DATE, booted_digest=first.digest, booted_image=promo.ref(stage),
                  booted_signature="containerPolicy" if i < enforcing else "")
             for stage, total, enforcing in (("dev", 6, 2), ("test", 4, 3), ("prod", 3, 3)) for i in range(total)]
    Host.objects.bulk_create(hosts)
    lose_signatures(promo, third)  # the portal's records say signed; containers/image finds nothing and refuses
    refused = promo.promote(third, "dev", expect_applied=False)
    assert refused.status == "failed" and "Source image rejected" in refused.status_note
    return {"waiting": waiting, "refused": refused, "second": second}


def test_the_supply_chain_pages_in_a_browser(personas, portal_server, world, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    with browser_page() as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/teams/{personas.team.slug}/signing-keys/")
        settle(page)
        body = page.inner_text("body")
        assert "release-2026" in body and "ci" in body and "Generate a key" in body
        assert "a signature with release-2026" in page.locator("#stage-test").inner_text()
        screenshot(page, "supplychain-keys")

        page.goto(portal_server.url + world["waiting"].get_absolute_url())
        settle(page)
        trust = page.locator("#promotion-trust").inner_text()
        assert "test requires a signature with release-2026: this digest has one" in trust
        assert "Signed with release-2026" in trust
        assert "CVE-2026-1002" in trust and "CVE-2026-1001" in trust and "Fixed by this promotion" in trust
        screenshot(page, "supplychain-approval-card")

        page.goto(portal_server.url + world["refused"].get_absolute_url())
        settle(page)
        body = page.inner_text("body")
        assert "containers/image refused this digest" in body
        screenshot(page, "supplychain-refused-promotion")

        page.goto(f"{portal_server.url}/builds/{world['second'].pk}/supply-chain/")
        settle(page)
        body = page.inner_text("body")
        assert "release-2026" in body and "signed" in body and "CVE-2026-1003" in body and "1.22.1-10" in body
        screenshot(page, "supplychain-build")

        page.goto(f"{portal_server.url}/advisories/CVE-2026-1002/")
        settle(page)
        body = page.inner_text("body")
        assert "2 builds, 1 held by a stage now" in body
        screenshot(page, "supplychain-cve")


def test_the_vulnerability_gate_the_override_and_the_fleets_enforcement_in_a_browser(personas, portal_server, world,
                                                                                       monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    waiting = world["waiting"]
    with browser_page() as page:
        log_in(page, portal_server.url, "approver")
        page.goto(portal_server.url + waiting.get_absolute_url())
        settle(page)
        gate = page.locator("#vulnerability-gate").inner_text()
        assert "test refuses images with high or worse vulnerabilities" in gate and "DSA-9002-1" in gate
        assert "Override for this request" in gate
        screenshot(page, "supplychain-approval-card-cve-gate")
        page.fill("#id_reason", "bash is not a login shell on these appliances; fixed build due Friday")
        follow(page, lambda: page.click("#vulnerability-gate button"))
        gate = page.locator("#vulnerability-gate").inner_text()
        assert "approver overrode DSA-9002-1" in gate and "fixed build due Friday" in gate
        assert "Override for this request" not in gate
        page.locator("#vulnerability-gate").scroll_into_view_if_needed()
        screenshot(page, "supplychain-approval-card-override")

        page.goto(f"{portal_server.url}/advisories/")
        settle(page)
        assert "read from https://mirror.example.internal/osv/Debian/all.zip every 6 h" in page.inner_text("body")
        screenshot(page, "supplychain-advisories")

        page.goto(f"{portal_server.url}/hosts/fleet/")
        settle(page)
        body = page.inner_text("body")
        assert "Enforce signatures" in body
        assert "33%" in page.locator(f"#enforcing-{personas.team.pk}-dev").inner_text()
        assert "75%" in page.locator(f"#enforcing-{personas.team.pk}-test").inner_text()
        screenshot(page, "fleet-enforcement")
        follow(page, lambda: page.click(f"#enforcing-{personas.team.pk}-dev a"))
        assert "dev-02" in page.inner_text("body") and "dev-00" not in page.inner_text("body")
        screenshot(page, "fleet-not-enforcing-list")
