"""The Containerfile editor in a real browser: line numbers and highlighting, the validator's marks at their lines as
you type, saving what the editor shows, and the plain textarea when JavaScript is off."""

import pytest
from playwright.sync_api import expect

from builds import services
from tests.browser import chromium, follow, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COLLECT_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.sample}`));
"""


@pytest.fixture
def definition(personas):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    services.revision_create(definition=definition, user=personas.developer,
                             containerfile="FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN bootc container lint\n")
    return definition


def test_the_editor_marks_problems_at_their_lines_as_you_type_and_saves_what_it_shows(personas, portal_server,
                                                                                     definition):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.add_init_script(COLLECT_VIOLATIONS)
        log_in(page, portal_server.url, "developer")
        page.goto(f"{portal_server.url}/images/{definition.pk}/revisions/new/")
        editor = page.locator(".cm-editor")
        editor.wait_for()
        assert not page.locator("textarea[name=containerfile]").is_visible()  # the editor stands in for it
        assert page.locator(".cm-lineNumbers .cm-gutterElement").filter(has_text="2").count() == 1
        expect(page.locator("#editor-status")).to_contain_text("No errors")

        page.locator(".cm-content").click()
        page.keyboard.press("Control+End")
        page.keyboard.type("ARG DB_PASSWORD=hunter2\nFROBNICATE now\n")
        expect(page.locator("#editor-status")).to_contain_text("1 error")
        assert "1 error, 1 warning" in page.locator("#editor-status").inner_text()
        assert page.locator(".cm-lint-marker-error").count() == 1 and page.locator(".cm-lint-marker-warning").count() == 1
        assert page.locator(".cm-lintRange-error").inner_text() == "FROBNICATE now"
        page.locator(".cm-lint-marker-error").hover()
        page.locator(".cm-tooltip-lint").wait_for()
        assert "FROBNICATE" in page.locator(".cm-tooltip-lint").inner_text()
        screenshot(page, "containerfile-editor-inline-marks")
        page.emulate_media(color_scheme="dark")  # the theme follows the system's setting at once
        expect(page.locator("html")).to_have_attribute("data-bs-theme", "dark")
        screenshot(page, "containerfile-editor-inline-marks-dark")
        page.emulate_media(color_scheme="light")
        assert page.evaluate("window.__csp") == []

        page.keyboard.press("Control+a")
        page.keyboard.type("FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN echo typed\nRUN bootc container lint\n")
        expect(page.locator("#editor-status")).to_contain_text("No errors")
        page.fill("input[name=message]", "typed in the editor")
        follow(page, page.get_by_role("button", name="Save revision").click)
    revision = definition.revisions.get(number=2)
    assert revision.containerfile == "FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN echo typed\nRUN bootc container lint\n"
    assert revision.message == "typed in the editor"


def test_without_javascript_the_textarea_still_saves(personas, portal_server, definition):
    with chromium() as browser:
        page = browser.new_context(java_script_enabled=False, viewport={"width": 1400, "height": 900}).new_page()
        log_in(page, portal_server.url, "developer")
        page.goto(f"{portal_server.url}/images/{definition.pk}/revisions/new/")
        assert page.locator(".cm-editor").count() == 0
        page.fill("textarea[name=containerfile]", "FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN true\n")
        follow(page, page.get_by_role("button", name="Save revision").click)
    assert definition.revisions.get(number=2).containerfile == "FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN true\n"
