"""The Content-Security-Policy in a real browser: every persona's main pages load with no violation reported.

The policy allows scripts and styles from the portal's own origin only: no 'unsafe-inline' for styles either, so no
style="" attribute, no <style> block, and nothing a script injects as markup may carry one (ansi_up's bold and
24-bit colours in the log viewer, htmx's indicator style). Script may still set element.style (the CSSOM), which the
policy allows. Chromium reports each refusal as a `securitypolicyviolation` event and on the console; both are
collected on every page, and must stay empty.
"""

import pytest
from django.utils import timezone

from builds import services
from builds.releases import services as promotions
from builds.releases.models import StageHistory
from hosts.models import Host, HostSnapshot, HostState
from portal import logsink
from portal.models import Run, RunStatus
from tests.browser import browser_page, chromium, log_in, screenshot
from tests.diskimages.rows import finished_conversion, succeeded_build

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI || "inline"} ${e.sourceFile}:${e.lineNumber} ${e.sample}`);
});
"""
BOLD, TRUECOLOR, RED, ITALIC_UNDERLINE, PALETTE_BG, RESET = (
    "\x1b[1m", "\x1b[38;2;255;100;0m", "\x1b[31m", "\x1b[3;4m", "\x1b[48;5;200m", "\x1b[0m")


def a_portal_with_something_on_every_page(personas):
    """Rows for each page to show: builds (one with a coloured log), a disk image, a promotion waiting for approval,
    a host with a status and a snapshot. Returns the ids the page list needs."""
    team, developer = personas.team, personas.developer
    build = succeeded_build(team, developer)
    with logsink.LogSink(build.run, publish=False) as sink:
        sink.write("STEP 1/2: FROM scratch")
        sink.write(f"{BOLD}bold{RESET} {TRUECOLOR}orange{RESET} {RED}red{RESET} {ITALIC_UNDERLINE}slanted{RESET} "
                   f"{PALETTE_BG}pink{RESET}")
    second = succeeded_build(team, developer, name="db-os", digest="sha256:" + "cd" * 32)
    StageHistory.objects.create(stage=team.stages.get(name="dev"), definition=second.definition,
                                digest=second.digest, build=second)
    promotion = promotions.promotion_request(definition=second.definition, build=second,
                                             target_stage=team.stages.get(name="test"), user=developer,
                                             reason="ready for test")
    disk_image = finished_conversion(build, developer)
    host = Host.objects.create(team=team, name="web-01", address="192.0.2.10", port=22, host_key="ssh-ed25519 AAAA",
                               state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=build.digest,
                               booted_version="1.0", status_at=timezone.now(),
                               status={"booted": {"image": {"image": "r/x:prod", "digest": build.digest,
                                                            "version": "1.0"}}})
    HostSnapshot.objects.create(host=host, raw='{"kind": "BootcHost"}', status_hash="a" * 64)
    failed = services.build_start(revision=build.revision, user=developer)
    Run.objects.filter(pk=failed.run_id).update(status=RunStatus.FAILED, exit_reason="podman build failed")
    return {"definition": build.definition_id, "build": build.pk, "run": build.run_id, "failed": failed.pk,
            "promotion": promotion.pk, "disk_image": disk_image.pk, "host": host.pk,
            "stage": team.stages.get(name="prod").pk}


def pages(ids):
    """{persona: [paths]}: the pages each persona uses most."""
    d, b, h = ids["definition"], ids["build"], ids["host"]
    return {
        None: ["/login/"],
        "developer": ["/", "/images/", f"/images/{d}/", f"/images/{d}/revisions/1/", f"/images/{d}/revisions/new/",
                      f"/images/{d}/edit/", "/builds/", f"/builds/{b}/", f"/builds/{ids['failed']}/",
                      f"/runs/{ids['run']}/", "/disk-images/", f"/disk-images/{ids['disk_image']}/",
                      "/disk-images/new/", "/disk-images/configurations/", "/disk-images/configurations/new/",
                      "/kickstarts/new/", "/promotions/", f"/promotions/{ids['promotion']}/", "/promotions/new/",
                      "/stages/", "/hosts/", "/audit/", "/teams/", "/account/two-factor/", "/password/"],
        "approver": ["/", f"/promotions/{ids['promotion']}/", f"/stages/{ids['stage']}/"],
        "operator": [f"/hosts/{h}/", f"/hosts/{h}/raw/", f"/hosts/{h}/actions/reboot/", "/hosts/drift/",
                     "/hosts/fleet/"],
        "viewer": ["/", f"/builds/{b}/", f"/runs/{ids['run']}/"],
        "helpdesk": ["/", "/hosts/", f"/hosts/{h}/"],
        "admin": ["/teams/platform/", "/teams/platform/integrations/", "/teams/platform/notifications/",
                  "/teams/platform/disk-images/", "/teams/platform/approver-groups/", f"/stages/{ids['stage']}/policy/",
                  "/hosts/new/", "/hosts/import/", "/teams/platform/ssh-key/", "/builders/"],
        "root": ["/admin/", "/admin/portal/team/", "/admin/portal/team/add/", "/admin/hosts/host/"],
        "outsider": ["/", "/images/", "/no-such-page/"],
    }


def violations_on(page, url):
    response = page.goto(url)
    page.wait_for_load_state("networkidle")
    return response, page.evaluate("window.__csp")


def test_no_page_of_any_persona_breaks_the_content_security_policy(personas, portal_server):
    ids = a_portal_with_something_on_every_page(personas)
    found = {}
    with chromium() as browser:
        for persona, paths in pages(ids).items():
            context = browser.new_context(viewport={"width": 1400, "height": 900})  # each persona's own cookies
            page = context.new_page()
            page.add_init_script(COLLECT_VIOLATIONS)
            console = []
            page.on("console", lambda message, console=console: console.append(message.text)
                    if "Content Security Policy" in message.text else None)
            if persona:
                log_in(page, portal_server.url, {"admin": personas.admin.username}.get(persona, persona))
            for path in paths:
                response, reported = violations_on(page, portal_server.url + path)
                assert response.status < 500, (persona, path, response.status)
                policy = response.headers.get("content-security-policy", "")
                if response.status < 400:  # django-csp leaves DEBUG's own error pages without a policy
                    assert "style-src 'self'" in policy and "unsafe-inline" not in policy, (path, policy)
                if reported or console:
                    found[(persona, path)] = reported + console
                    console.clear()
            context.close()
    assert found == {}


def test_the_log_viewer_colours_bold_and_24_bit_text_without_inline_styles(personas, portal_server):
    ids = a_portal_with_something_on_every_page(personas)
    with browser_page() as page:
        page.add_init_script(COLLECT_VIOLATIONS)
        log_in(page, portal_server.url, "developer")
        page.goto(f"{portal_server.url}/runs/{ids['run']}/")
        page.wait_for_selector("#L2 .ansi-bold")
        styles = page.evaluate("""() => {
            const line = document.querySelector("#L2");
            const css = (selector, property) => getComputedStyle(line.querySelector(selector))[property];
            return {bold: css(".ansi-bold", "fontWeight"), orange: css("[data-fg]", "color"),
                    italic: css(".ansi-italic", "fontStyle"), pink: css("[data-bg]", "backgroundColor"),
                    attributes: line.querySelectorAll("[style]").length === line.querySelectorAll("[data-fg], [data-bg]").length};
        }""")
        assert styles == {"bold": "700", "orange": "rgb(255, 100, 0)", "italic": "italic",
                          "pink": "rgb(255, 0, 215)", "attributes": True}
        assert page.evaluate("window.__csp") == []
        screenshot(page, "csp-log-colours")
