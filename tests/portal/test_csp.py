"""The Content-Security-Policy in a real browser: every persona's main pages load with no violation reported.

The policy allows scripts and styles from the portal's own origin only: no 'unsafe-inline' for styles either, so no
style="" attribute, no <style> block, and nothing a script injects as markup may carry one (ansi_up's bold and
24-bit colours in the log viewer, htmx's indicator style). Script may still set element.style (the CSSOM), which the
policy allows. Chromium reports each refusal as a `securitypolicyviolation` event and on the console; both are
collected on every page, and must stay empty.

The same sweep runs axe-core (vendored in tests/vendor/ by `make vendor`) on the pages but the Django admin's: no
violation at the "serious" or "critical" level (contrast, names of controls, structure; the rules that can only find
less are not run), with the system set to the light and to the dark colour scheme: the portal's theme follows the
system setting as it changes (theme.js) and only its CSS reads it, so each page is loaded once, in the scheme the page
before it was left in, checked, switched to the other scheme and checked again: in the light with axe's default rules,
in the dark with the rules that read colours (the dark theme changes nothing else). axe checks each markup
once: a page whose markup (MARKUP: every element's tag, classes, roles, ids and attributes, not its words) is that of a
page already checked, the same template shown to another persona with the same controls, is checked for the policy only.
The personas sign in with a session cookie (tests/browser.py sign_in); the sign-in form is the anonymous visitor's page.
With SWEEP_PICTURES=1 it keeps a picture of every page in each theme (test-artifacts/sweep-<scheme>-<persona>-<page>.png),
to be looked at; nothing reads them, and the full-page pictures took a good part of the sweep's time.
"""

import os
import re
from pathlib import Path

import pytest

from tests.browser import QuietPage, browser_page, chromium, screenshot, sign_in
from tests.portal.everypage import a_portal_with_something_on_every_page, pages

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PICTURES = os.environ.get("SWEEP_PICTURES") == "1"
AXE = (Path(__file__).resolve().parent.parent / "vendor" / "axe-core" / "axe.min.js").read_text()  # make vendor

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI || "inline"} ${e.sourceFile}:${e.lineNumber} ${e.sample}`);
});
"""


# What a page is made of, for axe's purposes: each element's tag (the head's too: a title, the document's language), its
# classes, role, type, id, label target, lang and aria-* attributes (their numbers, the rows' ids, made alike), the
# names of its other attributes and whether it holds text of its own, and whether any id is repeated (which the made
# alike numbers would hide); not the words, numbers or links, which are the persona's and its rows'. Two pages of the
# same markup differ only in those, which no rule of axe's judges by what they say: an empty name or heading is an
# element without text.
MARKUP = """() => [...document.querySelectorAll("*")].map(e => [
    e.tagName, e.getAttribute("class"), e.getAttribute("role"), e.getAttribute("type"),
    [...e.attributes].map(a => /^(id|for|lang|aria-.*)$/.test(a.name) ? a.name + "=" + a.value.replace(/\\d+/g, "#")
                                                                       : a.name).sort().join(","),
    [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()) ? "t" : "",
].join("|")).concat([(ids => "ids " + (new Set(ids).size === ids.length ? "unique" : "repeated"))(
    [...document.querySelectorAll("[id]")].map(e => e.id))]).join("\\n")"""

# The rules of axe's default set that read colours (its "cat.color" ones; color-contrast-enhanced, AAA, is not in the
# set): the only ones the theme can change the answer of, since the dark theme (static/portal/dark.css and Bootstrap's
# own) sets colours, backgrounds and borders, and no markup or layout. color-contrast is most of axe's time on a page.
COLOUR_RULES = {"type": "rule", "values": ["color-contrast", "link-in-text-block"]}


def serious_accessibility_violations(page, rules=None):
    """What axe-core finds on the page at the "serious" and "critical" levels, with its default rules or the `rules`
    given (axe's runOnly). Its script is evaluated through the browser's debugging protocol, which the page's policy
    does not govern, so the page is checked as served; once per page load (half a megabyte of script: a page checked
    again, in the other theme, reuses it). It reads the colours once the CSS transitions that are running have ended
    (Bootstrap's buttons and links fade over 0.15 s when the theme changes), not half-way.

    The rules whose impact is "moderate" or "minor" are not run: axe gives each finding its rule's impact (every rule
    of axe 4 has one), so they could only find what is filtered out here, and they took a good part of axe's time
    (`region` alone looks at every element of the body)."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE)
    found = page.evaluate("""async (rules) => {
        await Promise.all(document.getAnimations().filter(a => a instanceof CSSTransition)
                            .map(a => a.finished.catch(() => null)));
        const below = Object.fromEntries(axe._audit.rules.filter(r => ["moderate", "minor"].includes(r.impact))
                                                         .map(r => [r.id, {enabled: false}]));
        const r = await axe.run(document, rules ? {resultTypes: ["violations"], runOnly: rules, rules: below}
                                                : {resultTypes: ["violations"], rules: below});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ") + " (" +
                                           (n.any.concat(n.all)[0] || {message: ""}).message + ")")}));
    }""", rules)
    return [v for v in found if v["impact"] in ("serious", "critical")]


def picture_name(scheme, persona, path):
    return f"sweep-{scheme}-{persona or 'anonymous'}-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-') or 'home'}"


def switch_to(page, scheme, themed):
    """The system's colour scheme switched to `scheme`; returns once a page that follows it (`themed`) has followed (or
    10 s passed: the theme is asserted next), else after the next frame, where Chromium tells media query listeners.
    Waited for from the debugging protocol: Playwright's wait_for_function evaluates a string, which the policy refuses."""
    page.emulate_media(color_scheme=scheme)
    page.evaluate("""([themed, scheme]) => new Promise(done => {
        const until = Date.now() + 10000;
        const look = () => !themed || document.documentElement.dataset.bsTheme === scheme || Date.now() > until
            ? setTimeout(done) : requestAnimationFrame(look);
        requestAnimationFrame(look);
    })""", [themed, scheme])


OTHER = {"light": "dark", "dark": "light"}


@pytest.mark.timeout(600)  # some 60 pages, each loaded and checked by axe in two themes: about 1 minute on 2 cores
def test_no_page_of_any_persona_breaks_the_policy_or_has_a_serious_accessibility_violation_in_either_theme(
        personas, portal_server):
    ids = a_portal_with_something_on_every_page(personas)
    found, inaccessible, checked = {}, {}, set()
    with chromium() as browser:
        for persona, paths in pages(ids).items():
            # Each persona's own cookies. Each page loads in the scheme the page before it was left in and is switched
            # to the other: half the pages load dark and follow the system to the light, and no switch is spent on a
            # page about to be left (restyling and repainting it cost some 20 ms of Chromium's CPU a page).
            scheme = "light"
            context = browser.new_context(viewport={"width": 1400, "height": 900}, color_scheme=scheme)
            page = context.new_page()
            quiet = QuietPage(page)
            page.add_init_script(COLLECT_VIOLATIONS)
            console = []
            page.on("console", lambda message, console=console: console.append(message.text)
                    if "Content Security Policy" in message.text else None)
            if persona:
                sign_in(page, portal_server.url, {"admin": personas.admin.username}.get(persona, persona))
            for path in paths:
                response = page.goto(portal_server.url + path)
                quiet.wait()
                assert response.status < 500, (persona, path, response.status)
                # Signed in (the session cookie taken): else every page would be the sign-in form, checked again.
                assert not persona or not page.url.startswith(portal_server.url + "/login/"), (persona, path, page.url)
                policy = response.headers.get("content-security-policy", "")
                if response.status < 400:  # django-csp leaves DEBUG's own error pages without a policy
                    assert "style-src 'self'" in policy and "unsafe-inline" not in policy, (path, policy)
                admin = path.startswith("/admin/")  # Django's own pages: its own theme, and axe is not run on them
                themed = response.status < 400 and not admin  # DEBUG's and the admin's own pages do not follow it
                markup = None if admin else page.evaluate(MARKUP)
                accessibility = markup is not None and markup not in checked  # each markup once, in both themes
                checked.add(markup)
                for switched in (False, True):
                    if switched:
                        scheme = OTHER[scheme]
                        switch_to(page, scheme, themed)
                    if themed:
                        assert page.evaluate("document.documentElement.dataset.bsTheme") == scheme, (persona, path)
                    if PICTURES:
                        screenshot(page, picture_name(scheme, persona, path))
                    serious = [] if not accessibility else serious_accessibility_violations(
                        page, COLOUR_RULES if scheme == "dark" else None)
                    if serious:
                        inaccessible[(persona, path, scheme)] = serious
                reported = page.evaluate("window.__csp")
                if reported or console:
                    found[(persona, path)] = reported + console
                    console.clear()
            context.close()
    assert found == {}
    assert inaccessible == {}, "\n".join(f"{persona} {path} ({scheme}): {v['impact']} {v['id']} ({v['help']}) at "
                                          f"{v['nodes']}" for (persona, path, scheme), vs in inaccessible.items()
                                          for v in vs)


def test_the_log_viewer_colours_bold_and_24_bit_text_without_inline_styles(personas, portal_server):
    ids = a_portal_with_something_on_every_page(personas)
    with browser_page() as page:
        page.add_init_script(COLLECT_VIOLATIONS)
        sign_in(page, portal_server.url, "developer")
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
