"""The portal by keyboard alone, in a real browser: signing in, skipping the navigation, moving between pages, and an
action that asks for confirmation."""

import pytest

from builds import services
from builds.models import Build
from portal.models import Run, RunStatus
from tests.browser import browser_page, follow, screenshot
from tests.diskimages.rows import succeeded_build

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def focused(page):
    return page.evaluate("document.activeElement ? document.activeElement.innerText.trim() : ''")


def tab_to(page, text, limit=60):
    """Presses Tab until the focused element reads `text`, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused(page) == text:
            return
    raise AssertionError(f"{text!r} cannot be reached with Tab")


def test_a_keyboard_user_signs_in_moves_around_and_retries_a_failed_build(personas, portal_server):
    build = succeeded_build(personas.team, personas.developer)
    failed = services.build_start(revision=build.revision, user=personas.developer)
    Run.objects.filter(pk=failed.run_id).update(status=RunStatus.FAILED, exit_reason="podman build failed")
    with browser_page() as page:
        page.goto(portal_server.url + "/login/")
        page.keyboard.type("developer")  # the username field has the focus
        page.keyboard.press("Tab")
        page.keyboard.type("correct horse battery")
        follow(page, lambda: page.keyboard.press("Enter"))
        assert page.locator("h1").inner_text() == "Dashboard"

        page.keyboard.press("Tab")  # the first stop skips the navigation
        assert focused(page) == "Skip to the page's content"
        screenshot(page, "keyboard-skip-link")
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"

        page.goto(portal_server.url + "/")
        tab_to(page, "Builds")
        follow(page, lambda: page.keyboard.press("Enter"))
        assert page.locator("h1").first.inner_text() == "Builds"

        failed_path = failed.get_absolute_url()
        page.goto(portal_server.url + failed_path)
        page.once("dialog", lambda dialog: dialog.accept())  # "Build r1 for linux/amd64 again, as a new build?"
        tab_to(page, "Retry")
        page.keyboard.press("Enter")
        # The retry is posted once the confirmation is accepted, and answers with the new build's page.
        page.wait_for_url(lambda url: not url.endswith(failed_path), timeout=30_000)
    assert Build.objects.filter(retry_of=failed).count() == 1
