"""Playwright on Debian's Chromium headless shell (a browser download is impossible here, and not needed)."""

import asyncio
import base64
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.helpers import ARTIFACTS, require_tool

# Chromium's headless shell (Debian's chromium-headless-shell, the build Playwright itself runs headless): the same Blink
# and fonts as the full browser without its UI layers, which took a fifth more CPU over the page sweep (67 -> 52 CPU-s
# on 2 cores), and Chromium was the suite's largest user of CPU after the tests themselves.
CHROMIUM = "/usr/bin/chromium-headless-shell"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


class KeptChromium:
    """The worker's Playwright driver and Chromium, started by its first browser test and kept for the others: starting
    them took a second or two of CPU per test (more on a busy machine). Each test still gets a browser of its own as far
    as a page can tell: the contexts it opened (each with its own cookies, storage and cache) are closed when its block
    ends, and a browser left broken by a failed test is stopped and started again by the next one.

    Between its sync calls Playwright marks its event loop as running in this thread, which the async tests and Django's
    ORM would trip over in the tests that follow. So the mark is taken away when a block ends, and given back when the
    next block starts (Playwright's loop is only paused between calls: its own code expects to find it running)."""

    playwright = browser = None

    @classmethod
    def enter(cls):
        from playwright.sync_api import sync_playwright

        if cls.playwright is not None:
            asyncio._set_running_loop(cls.playwright._loop)
            if not cls.browser.is_connected():
                cls.stop()
        if cls.browser is None:
            cls.playwright = sync_playwright().start()
            try:
                cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            except BaseException:
                cls.stop()
                raise
        return cls.browser

    @classmethod
    def leave(cls, cleanly):
        from playwright.sync_api import Error

        try:
            if cleanly:
                for context in cls.browser.contexts:
                    context.close()
        except Error:
            cleanly = False
        if not cleanly:
            cls.stop()
        asyncio._set_running_loop(None)

    @classmethod
    def stop(cls):
        """Playwright and Chromium stopped (Playwright's stop ends the browser it started too)."""
        playwright, cls.playwright, cls.browser = cls.playwright, None, None
        if playwright is not None:
            asyncio._set_running_loop(playwright._loop)
            try:
                playwright.stop()
            finally:
                asyncio._set_running_loop(None)


@contextmanager
def chromium():
    """Chromium for the block (the worker's kept one, see KeptChromium). A test that needs several users opens one
    context each (`browser.new_context()`: cookies and storage of its own) in the same browser; every context is closed
    when the block ends."""
    require_tool("chromium-headless-shell")
    browser = KeptChromium.enter()
    cleanly = False
    try:
        yield browser
        cleanly = True
    finally:
        KeptChromium.leave(cleanly)


@contextmanager
def browser_page(width=1400, height=900):
    """A page of its own (a context of its own) in the worker's Chromium, counting its requests for settle()."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        QuietPage(page)
        yield page


def log_in(page, base_url, username, password="correct horse battery"):
    """Sign in through the form; returns once the page it lands on has loaded (its "load" event: never half a second
    of network silence, which a page that polls or holds a websocket makes every sign-in wait for)."""
    page.goto(base_url + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.click("form [type=submit]")


def sign_in(page, base_url, username):
    """The page's context signed in as `username` without the sign-in form: Django's test client signs in on the
    database the portal's processes share and its session cookie is handed to the browser, as a person's browser holds
    one after signing in. It spares a test the form's page, its POST and the page it lands on (about a second of the
    portal's and Chromium's CPU, two on a busy machine); tests of signing in itself use log_in. The client runs in a
    thread of its own: Django's ORM refuses to run in a thread where an event loop runs, as Playwright's does here."""
    from django.conf import settings

    with ThreadPoolExecutor(max_workers=1) as thread:
        session_key = thread.submit(_session_of, username).result()
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": base_url, "value": session_key}])


def _session_of(username):
    """A new signed-in session of `username`, on a database connection of the calling thread that it closes."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import Client

    try:
        client = Client()
        client.force_login(get_user_model().objects.get(username=username),
                           backend="django.contrib.auth.backends.ModelBackend")
        return client.cookies[settings.SESSION_COOKIE_NAME].value
    finally:
        connections.close_all()


def screenshot(page, name):
    """A PNG of the whole page in test-artifacts/ (what Playwright's full_page screenshot takes, once the page's fonts
    have loaded, the same pixels), encoded for speed: Chromium's PNG encoder at the settings Playwright leaves it at took
    a third to a half of a full-page picture's CPU. The page sweep's 114 pictures (SWEEP_PICTURES=1) took 15.8 -> 13.3
    CPU-s, a page of 1400x5130 0.44 -> 0.33 CPU-s (its file a fifth larger); the suite takes some ninety."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("document.fonts.ready.then(() => null)")
    session = page.context.new_cdp_session(page)
    try:
        size = session.send("Page.getLayoutMetrics")["cssContentSize"]
        picture = session.send("Page.captureScreenshot", {
            "format": "png", "optimizeForSpeed": True, "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": math.ceil(size["width"]), "height": math.ceil(size["height"]), "scale": 1}})
    finally:
        session.detach()
    path.write_bytes(base64.b64decode(picture["data"]))
    return path


# Elements htmx marks while a request of theirs is open or its answer is being swapped in and settled.
HTMX_BUSY = ".htmx-request, .htmx-swapping, .htmx-settling, .htmx-added"


class QuietPage:
    """Waits after a navigation until the page is done: loaded, htmx neither waiting for an answer nor swapping one in,
    and no request of the page open for `quiet` seconds. Playwright's "networkidle" waits for half a second without a
    request, on every page; a page sweep of a hundred pages spent a minute in those silences alone. htmx asks for a
    page's fragments (hx-trigger="load") while it swaps in the content that holds them, before that content settles, so
    "htmx is not busy" already spans the gaps between chained requests; the short silence after it catches any other.

    Make one right after `new_page()`, before the first navigation: it counts the page's requests from then on
    (browser_page() does; settle() makes one for a page that has none, counting from then on)."""

    def __init__(self, page):
        self.page, self.open, self.last_change = page, set(), time.monotonic()
        page.quiet = self
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


def settle(page, quiet=0.15, timeout=30.0):
    """Returns once the page has loaded and settled (QuietPage.wait): what the tests waited for Playwright's "networkidle"
    for, without its half second of silence after every page."""
    (getattr(page, "quiet", None) or QuietPage(page)).wait(quiet, timeout)


def follow(page, action):
    """Runs `action` (a click or a key press that submits a form or follows a link) and returns once the page the portal
    answers with has loaded and settled."""
    with page.expect_navigation():
        action()
    settle(page)
