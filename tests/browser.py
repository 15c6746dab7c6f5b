"""Playwright on Debian's Chromium (a browser download is impossible here, and not needed)."""

from contextlib import contextmanager

from tests.conftest import ARTIFACTS, require_tool

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium():
    """One Chromium for the block. Starting Playwright's driver and the browser takes seconds; a test that needs several
    users opens one context each (`browser.new_context()`: cookies and storage of its own) in the same browser.

    Playwright is stopped again at the end of the block, never kept for the session: while its sync API is alive it
    marks its event loop as running in this thread, which the async tests and Django's ORM would trip over."""
    require_tool("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(width=1400, height=900):
    with chromium() as browser:
        yield browser.new_page(viewport={"width": width, "height": height})


def log_in(page, base_url, username, password="correct horse battery"):
    """Sign in through the form; returns once the page it lands on has loaded (its "load" event: never half a second
    of network silence, which a page that polls or holds a websocket makes every sign-in wait for)."""
    page.goto(base_url + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form [type=submit]")


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
