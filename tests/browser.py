"""Playwright on Debian's Chromium (a browser download is impossible here, and not needed)."""

import time
from contextlib import contextmanager

from tests.helpers import ARTIFACTS, require_tool

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


# Elements htmx marks while a request of theirs is open or its answer is being swapped in and settled.
HTMX_BUSY = ".htmx-request, .htmx-swapping, .htmx-settling, .htmx-added"


class QuietPage:
    """Waits after a navigation until the page is done: loaded, htmx neither waiting for an answer nor swapping one in,
    and no request of the page open for `quiet` seconds. Playwright's "networkidle" waits for half a second without a
    request, on every page; a page sweep of a hundred pages spent a minute in those silences alone. htmx asks for a
    page's fragments (hx-trigger="load") while it swaps in the content that holds them, before that content settles, so
    "htmx is not busy" already spans the gaps between chained requests; the short silence after it catches any other.

    Make one right after `new_page()`, before the first navigation: it counts the page's requests from then on."""

    def __init__(self, page):
        self.page, self.open, self.last_change = page, set(), time.monotonic()
        page.on("request", self._opened)
        page.on("requestfinished", self._closed)
        page.on("requestfailed", self._closed)

    def _opened(self, request):
        self.open.add(request)
        self.last_change = time.monotonic()

    def _closed(self, request):
        self.open.discard(request)
        self.last_change = time.monotonic()

    def wait(self, quiet=0.15, timeout=30.0):
        self.page.wait_for_load_state("load")
        deadline = time.monotonic() + timeout
        while True:
            if not self.open and time.monotonic() - self.last_change >= quiet and not self._htmx_busy():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.page.url} still busy after {timeout} s: {[r.url for r in self.open]}")
            self.page.wait_for_timeout(25)  # lets Playwright deliver the page's events meanwhile

    def _htmx_busy(self):
        from playwright.sync_api import Error

        try:
            return self.page.evaluate(f"!!document.querySelector({HTMX_BUSY!r})")
        except Error:  # the page navigated meanwhile (a redirect): busy until the new one is looked at
            return True
