"""The Content-Security-Policy in a real browser: every persona's main pages load with no violation reported.

The policy allows scripts and styles from the portal's own origin only: no 'unsafe-inline' for styles either, so no
style="" attribute, no <style> block, and nothing a script injects as markup may carry one (ansi_up's bold and
24-bit colours in the log viewer, htmx's indicator style). Script may still set element.style (the CSSOM), which the
policy allows. Chromium reports each refusal as a `securitypolicyviolation` event and on the console; both are
collected on every page, and must stay empty.

The same sweep runs axe-core (vendored in tests/vendor/ by `make vendor`) on every page but the Django admin's: no
violation at the "serious" or "critical" level (contrast, names of controls, structure). It runs twice, with the
system set to the light and to the dark colour scheme (the portal's theme follows it), and keeps a picture of every
page in each (test-artifacts/sweep-<scheme>-<persona>-<page>.png).
"""

import re
from pathlib import Path

import pytest

from tests.browser import QuietPage, browser_page, chromium, log_in, screenshot
from tests.portal.everypage import a_portal_with_something_on_every_page, pages

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = (Path(__file__).resolve().parent.parent / "vendor" / "axe-core" / "axe.min.js").read_text()  # make vendor

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI || "inline"} ${e.sourceFile}:${e.lineNumber} ${e.sample}`);
});
"""


def serious_accessibility_violations(page):
    """What axe-core finds on the page at the "serious" and "critical" levels. Its script is evaluated through the
    browser's debugging protocol, which the page's policy does not govern, so the page is checked as served."""
    page.evaluate(AXE)
    found = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " (" +
                                           (n.any.concat(n.all)[0] || {message: ""}).message + ")")}));
    }""")
    return [v for v in found if v["impact"] in ("serious", "critical")]


def violations_on(page, quiet, url):
    response = page.goto(url)
    quiet.wait()
    return response, page.evaluate("window.__csp")


def picture_name(scheme, persona, path):
    return f"sweep-{scheme}-{persona or 'anonymous'}-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-') or 'home'}"


@pytest.mark.timeout(600)  # some 60 pages, each loaded, pictured and checked by axe: about 4 minutes on 2 cores
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_page_of_any_persona_breaks_the_policy_or_has_a_serious_accessibility_violation(personas, portal_server,
                                                                                           scheme):
    ids = a_portal_with_something_on_every_page(personas)
    found, inaccessible = {}, {}
    with chromium() as browser:
        for persona, paths in pages(ids).items():
            # Each persona's own cookies; the system's colour scheme, which the portal's theme follows.
            context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme=scheme)
            page = context.new_page()
            quiet = QuietPage(page)
            page.add_init_script(COLLECT_VIOLATIONS)
            console = []
            page.on("console", lambda message, console=console: console.append(message.text)
                    if "Content Security Policy" in message.text else None)
            if persona:
                log_in(page, portal_server.url, {"admin": personas.admin.username}.get(persona, persona))
            for path in paths:
                response, reported = violations_on(page, quiet, portal_server.url + path)
                assert response.status < 500, (persona, path, response.status)
                policy = response.headers.get("content-security-policy", "")
                if response.status < 400:  # django-csp leaves DEBUG's own error pages without a policy
                    assert "style-src 'self'" in policy and "unsafe-inline" not in policy, (path, policy)
                if reported or console:
                    found[(persona, path)] = reported + console
                    console.clear()
                if response.status < 400 and not path.startswith("/admin/"):  # DEBUG's and the admin's own pages
                    assert page.evaluate("document.documentElement.dataset.bsTheme") == scheme, (persona, path)
                screenshot(page, picture_name(scheme, persona, path))
                serious = [] if path.startswith("/admin/") else serious_accessibility_violations(page)  # Django's own
                if serious:
                    inaccessible[(persona, path)] = serious
            context.close()
    assert found == {}
    assert inaccessible == {}, "\n".join(f"{persona} {path}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
                                          for (persona, path), vs in inaccessible.items() for v in vs)


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
