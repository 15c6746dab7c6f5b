"""The pictures in a browser, in the light and the dark theme (the system's setting): the release map on the dashboard
and on the definition page, the build trends, the host's timeline strip and the fleet view's version spread.
Screenshots land in test-artifacts/; the Content-Security-Policy reports no violation (the SVG has no inline style)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from builds.models import Build
from hosts.models import EventKind, HostEvent, HostState
from tests.browser import chromium, follow, screenshot, settle
from tests.builds.test_trends import finished_build
from tests.hosts.test_integration_links import D1, D2, REPOSITORY, World, make_host
from tests.portal.test_csp import COLLECT_VIOLATIONS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def a_fleet(personas):
    world = World(personas)
    team = personas.team
    for n, state in enumerate([HostState.UP_TO_DATE] * 5 + [HostState.UPDATE_STAGED] * 2 + [HostState.UNREACHABLE]):
        make_host(team, f"test-{n:02}", booted_digest=D1 if n < 6 else D2, booted_version="1.0" if n < 6 else "1.1",
                  tracked_image=f"{REPOSITORY}:test", booted_image=f"{REPOSITORY}:test", state=state)
    for n, state in enumerate([HostState.UP_TO_DATE] * 3 + [HostState.DRIFT, HostState.ROLLED_BACK]):
        make_host(team, f"dev-{n:02}", booted_digest=D2, booted_version="1.1", tracked_image=f"{REPOSITORY}:dev",
                  booted_image=f"{REPOSITORY}:dev", state=state,
                  drifting=state == HostState.DRIFT, update_digest=D1 if state == HostState.DRIFT else "")
    revision = world.definition.revisions.get()
    Build.objects.filter(definition=world.definition).update(size=700_000_000, package_format="rpm",
                                                             packages={f"p{i}": "1" for i in range(400)})
    for number in range(3, 15):
        finished_build(world.definition, revision, number, seconds=200 + 17 * number + (90 if number % 4 == 0 else 0),
                       size=700_000_000 + number * 3_000_000, packages={f"p{i}": "1" for i in range(400 + number)},
                       status="failed" if number in (6, 11) else "succeeded")
    now = timezone.now()
    for hours, kind, digest, version in ((72, EventKind.FIRST_SEEN, D1, "1.0"), (50, EventKind.BOOTED, D2, "1.1"),
                                         (30, EventKind.ROLLED_BACK, D1, "1.0"), (8, EventKind.BOOTED, D2, "1.1")):
        HostEvent.objects.create(host=world.web1, at=now - timedelta(hours=hours), kind=kind, digest=digest,
                                 version=version, summary=f"{kind}: {version}")
    return world


def test_the_pictures_in_the_light_and_dark_themes(personas, portal_server):
    world = a_fleet(personas)
    pages = [("dashboard", "/"), ("definition", world.definition.get_absolute_url()),
             ("host", world.web1.get_absolute_url()), ("fleet", "/hosts/fleet/")]
    with chromium() as browser:
        for scheme in ("light", "dark"):
            page = browser.new_page(viewport={"width": 1400, "height": 900}, color_scheme=scheme)
            page.add_init_script(COLLECT_VIOLATIONS)
            page.goto(portal_server.url + "/login/")
            page.fill("input[name=username]", "developer")
            page.fill("input[name=password]", "correct horse battery")
            follow(page, page.locator("form [type=submit]").first.click)
            for name, url in pages:
                page.goto(portal_server.url + url)
                settle(page)
                assert page.evaluate("document.documentElement.dataset.bsTheme") == scheme
                if name in ("dashboard", "definition"):
                    page.locator(".release-map .rm-bar").first.wait_for()
                    assert "7 up to date" in page.locator(".release-map").inner_text()
                    assert "build 2 · waiting for approval" in page.locator(".release-map .rm-on-the-way").inner_text()
                if name == "definition":
                    assert page.locator(".build-trends rect.tr-failed").count() == 6  # 2 failed builds x 3 charts
                if name == "fleet":
                    assert page.locator(".version-spread .vs-row").count() == 2  # dev and test
                    assert page.locator("a[href$='only=update']").inner_text() == "1"  # dev's drifting host
                if name == "host":
                    assert page.locator(".boot-strip rect.bs-rollback").count() == 1
                assert page.evaluate("window.__csp") == [], (scheme, url)
                screenshot(page, f"pictures-{name}-{scheme}")
            page.close()
