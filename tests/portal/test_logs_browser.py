"""The log viewer in a real browser (Chromium, Playwright) against a real daphne: lines streaming in, colours, sections,
permalinks, timestamps, search, long logs, following, the polling fallback, and the result arriving without a reload."""

import re
import time

import pytest

from portal import live, logsink, services
from portal.models import RunKind, RunStatus
from tests.browser import browser_page, screenshot, sign_in
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

GREEN, YELLOW, RED, RESET = "\x1b[32m", "\x1b[33m", "\x1b[31m", "\x1b[0m"


@pytest.fixture(autouse=True)
def database_next_to_the_browser(monkeypatch):
    """Playwright's sync API keeps an event loop in this thread; the tests write logs between browser steps, which
    Django refuses next to a running loop unless told that this thread is not serving async code."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def make_run(personas, kind=RunKind.BUILD):
    run = services.run_create(kind=kind, title="Build 3 of web-os", team=personas.team, started_by=personas.developer)
    services.run_start(run, phase="building")
    return run


def write_log(run, lines, batch_lines=None):
    with logsink.LogSink(run, publish=False) as sink:
        if batch_lines:
            sink.batch_lines = batch_lines
        for line in lines:
            sink.write(line)
    return sink


def finish(run, status=RunStatus.SUCCEEDED, reason="", lines=None):
    services.run_finish(run, status=status, reason=reason, log_lines=lines)
    live.wait_published()


def build_output(packages=30):
    yield "STEP 1/3: FROM localhost/base:latest"
    yield "STEP 2/3: RUN dnf -y install httpd"
    for i in range(packages):
        yield f"  Installing : {GREEN}package-{i}{RESET}.x86_64    {i + 1}/{packages}"
    yield f"{YELLOW}warning: /etc/httpd/conf.d/ssl.conf created as ssl.conf.rpmnew{RESET}"
    yield f"{GREEN}Complete!{RESET}"
    yield "STEP 3/3: LABEL containers.bootc=1"
    yield "COMMIT localhost/web-os:3"


def wait_js(page, expression, timeout=10):
    """Wait until a JavaScript expression is true (page.wait_for_function would need eval, which the CSP forbids)."""
    wait_for(lambda: page.evaluate(expression), timeout=timeout, what=expression)


def seqs_on_page(page):
    return page.evaluate("[...document.querySelectorAll('#log-lines .log-line')].map(r => +r.id.slice(1))")


def in_view(page, seq):
    return page.evaluate(
        "(seq) => { const r = document.getElementById('L' + seq)?.getBoundingClientRect();"
        " const v = document.getElementById('log').getBoundingClientRect();"
        " return !!r && r.height > 0 && r.top >= v.top - 1 && r.bottom <= v.bottom + 1; }", seq)


def test_a_running_log_streams_in_with_colours_and_sections_then_the_result_shows_without_a_reload(
        personas, portal_server):
    run = make_run(personas)
    sink = logsink.LogSink(run)
    with browser_page() as page:
        sign_in(page, portal_server.url, "viewer")
        page.goto(f"{portal_server.url}/runs/{run.pk}/")
        page.wait_for_selector("#log[data-ready]")
        page.evaluate("window.sameDocument = 'yes'")
        page.wait_for_selector("#log-conn[data-state=live]")
        assert page.locator("#log-empty").is_visible()

        for i, line in enumerate(build_output(), 1):
            sink.write(line)
            sink.flush()
            if i in (1, 5, 20):
                page.wait_for_selector(f"#L{i}")  # each line shows up while the run is still writing
        live.wait_published()
        page.wait_for_selector("#L36")
        assert seqs_on_page(page) == list(range(1, 37))
        assert page.locator("#L3 .lt .ansi-green-fg").inner_text() == "package-0"
        assert page.locator("#L33 .lt .ansi-yellow-fg").count() == 1
        assert page.locator(".log-line.log-sec").count() == 3
        assert page.locator("#L2 .sec-dur").inner_text() != ""
        assert page.locator("#log-outline-count").inner_text() == "3"
        assert page.locator("#log-count").inner_text() == "36 lines"
        assert in_view(page, 36)  # following

        sink.close()
        finish(run, RunStatus.SUCCEEDED, "Pushed localhost/web-os@sha256:0123", lines=sink.last_seq)
        page.wait_for_selector("#run-status [data-run-status=succeeded]")
        page.wait_for_selector("#run-result .run-result-succeeded")
        assert "Pushed localhost/web-os@sha256:0123" in page.locator("#run-result").inner_text()
        assert page.locator("#log-conn").get_attribute("data-state") == "ended"
        assert page.evaluate("window.sameDocument") == "yes"  # no reload happened
        assert re.fullmatch(r"\d+ (ms|s)", page.locator("#run-duration").inner_text())


def test_reading_a_long_finished_log(personas, portal_server, settings):
    from portal.views import TAIL_LINES

    run = make_run(personas)
    lines = [*build_output(), *[f"line {i} of the long log" for i in range(37, 2601)]]
    lines[1499] = "the needle is here: NEEDLE"
    lines[2099] = "another needle, and a \x1b[31mneedle\x1b[0m in red"
    lines[2589] = "L" * 70_000  # over the 64 KB display limit
    lines[40] = "needle, early on"
    write_log(run, lines, batch_lines=300)
    finish(run, lines=len(lines))
    with browser_page() as page:
        sign_in(page, portal_server.url, "developer")
        page.goto(f"{portal_server.url}/runs/{run.pk}/")
        page.wait_for_selector("#log[data-ready]")
        # The tail first, scrolled to its end; the rest is not on the page yet.
        assert seqs_on_page(page) == list(range(2600 - TAIL_LINES + 1, 2601))
        assert in_view(page, 2600)
        assert not page.locator("#log-follow").is_checked()  # the run has ended: nothing to follow

        # A line cut for display, with its "expand" link.
        assert len(page.locator("#L2590 .lt").inner_text()) == 65_536
        page.click("#L2590 .log-expand")
        wait_js(page, "document.querySelector('#L2590 .lt').textContent.length === 70000")

        # Scrolling up loads earlier lines, keeping what the reader looks at in place.
        page.evaluate("document.getElementById('log').scrollTop = 0")
        page.wait_for_selector(f"#L{2600 - TAIL_LINES}")
        first_loaded = min(seqs_on_page(page))
        assert first_loaded < 2600 - TAIL_LINES + 1
        assert not in_view(page, first_loaded)

        # A permalink loads a window around its line, highlights it and scrolls to it.
        page.goto(f"{portal_server.url}/runs/{run.pk}/#L42")
        page.wait_for_selector("#L42.hl")
        wait_for(lambda: in_view(page, 42), timeout=5, what="line 42 in view")
        assert page.url.endswith("#L42")
        # Clicking a line number is a permalink too; shift-click makes a range.
        page.click("#L45 .ln")
        page.click("#L47 .ln", modifiers=["Shift"])
        assert page.url.endswith("#L45-L47")
        assert page.evaluate("[...document.querySelectorAll('.log-line.hl')].map(r => r.id)") == ["L45", "L46", "L47"]

        # Timestamps on and off.
        page.check("#log-ts")
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", page.locator("#L42").get_attribute("data-ts"))
        assert "show-ts" in page.locator("#log").get_attribute("class")
        page.uncheck("#log-ts")

        # Sections fold and unfold.
        page.goto(f"{portal_server.url}/runs/{run.pk}/#L2")
        page.wait_for_selector("#L2.hl")
        page.click("#L2 .sec-toggle")
        assert not page.locator("#L10").is_visible() and page.locator("#L35").is_visible()
        page.click("#L2 .sec-toggle")
        assert page.locator("#L10").is_visible()

        # Search on the server, over the whole log: the count, then next and previous through lines not yet loaded.
        # It starts at the first match below the top of the view (line 2 here), like a browser's find.
        page.fill("#log-search-input", "needle")
        page.press("#log-search-input", "Enter")
        page.wait_for_selector("#L41.match-current")
        assert page.locator("#log-search-count").inner_text() == "1 of 3"
        page.click("#log-search-next")
        page.wait_for_selector("#L1500.match-current")
        assert page.locator("#log-search-count").inner_text() == "2 of 3"
        assert page.locator("#L1500 mark.log-mark").all_inner_texts() == ["needle", "NEEDLE"]
        page.press("#log-search-input", "Enter")  # Enter again: the next match
        page.wait_for_selector("#L2100.match-current")
        assert page.locator("#L2100 mark.log-mark").count() == 2
        page.click("#log-search-next")
        page.wait_for_selector("#L41.match-current")  # round again
        page.click("#log-search-prev")
        page.wait_for_selector("#L2100.match-current")
        assert page.locator("#log-search-count").inner_text() == "3 of 3"
        page.fill("#log-search-input", "no such thing")
        page.press("#log-search-input", "Enter")
        wait_js(page, "document.getElementById('log-search-count').textContent === 'no matches'")

        # The outline jumps to a section.
        page.click("#log-outline-menu button")
        page.click(".log-outline-item[data-seq='35']")
        page.wait_for_selector("#L35.hl")

        # Raw downloads.
        assert page.get_attribute("a:has-text('Raw')", "href") == f"/runs/{run.pk}/log.txt"
        assert page.get_attribute("a:has-text('Download .gz')", "href") == f"/runs/{run.pk}/log.txt?gzip=1"
        assert seqs_on_page(page) == sorted(set(seqs_on_page(page)))  # never a line twice


def test_following_pauses_when_the_reader_scrolls_up_and_resumes_at_the_bottom(personas, portal_server):
    run = make_run(personas)
    sink = logsink.LogSink(run)
    for i in range(1, 201):
        sink.write(f"line {i}")
    sink.flush()
    with browser_page() as page:
        sign_in(page, portal_server.url, "viewer")
        page.goto(f"{portal_server.url}/runs/{run.pk}/")
        page.wait_for_selector("#log-conn[data-state=live]")
        assert page.locator("#log-follow").is_checked() and in_view(page, 200)

        page.mouse.move(700, 600)
        page.mouse.wheel(0, -600)
        wait_js(page, "!document.getElementById('log-follow').checked")
        for i in range(201, 221):
            sink.write(f"line {i}")
        sink.flush()
        live.wait_published()
        page.wait_for_selector("#L220", state="attached")
        assert not in_view(page, 220)  # paused: the reader stays where they are
        wait_js(page, "document.querySelector('#log-jump span').textContent.startsWith('20 new lines')")

        page.click("#log-jump")
        assert page.locator("#log-follow").is_checked()
        wait_for(lambda: in_view(page, 220), timeout=5, what="the end in view")
        sink.write("line 221")
        sink.flush()
        page.wait_for_selector("#L221")
        wait_for(lambda: in_view(page, 221), timeout=5, what="following again")
        sink.close()
        finish(run, lines=221)


def test_following_a_huge_live_log_keeps_the_page_light(personas, portal_server):
    run = make_run(personas)
    sink = logsink.LogSink(run)
    with browser_page() as page:
        sign_in(page, portal_server.url, "viewer")
        page.goto(f"{portal_server.url}/runs/{run.pk}/")
        page.wait_for_selector("#log-conn[data-state=live]")
        page.evaluate("window.logViewer.maxRows = 300")  # instead of 30,000
        for i in range(1, 501):
            sink.write(f"line {i}")
            if i % 50 == 0:
                sink.flush()
        live.wait_published()
        page.wait_for_selector("#L500")
        seqs = seqs_on_page(page)
        assert len(seqs) <= 300 and seqs[-1] == 500 and seqs == list(range(seqs[0], 501))
        gap = page.locator("#log-lines > .log-gap").first
        assert gap.get_attribute("data-after") == "0" and gap.get_attribute("data-before") == str(seqs[0])
        # The older lines come back when the reader scrolls up to them.
        page.evaluate("document.getElementById('log').scrollTop = 0")
        page.wait_for_selector("#L1")
        assert seqs_on_page(page) == list(range(1, 501))
        sink.close()
        finish(run, lines=500)


def open_as_viewer_without_websockets(page, portal_server, run):
    """The run's page as the viewer, behind a proxy that refuses websockets: the viewer falls back to polling. Returns
    the list the times of its polls are appended to."""
    page.route_web_socket(re.compile(r".*/ws/runs/.*"), lambda ws: ws.close(code=1011, reason="blocked by a proxy"))
    polls = []
    page.on("request", lambda request: polls.append(time.monotonic()) if "/log/?after=" in request.url else None)
    sign_in(page, portal_server.url, "viewer")
    page.goto(f"{portal_server.url}/runs/{run.pk}/")
    page.wait_for_selector("#log-conn[data-state=polling]", timeout=15000)
    return polls


def wait_four_polls(page):
    """Long enough for the polling fallback to ask four more times, had it not stopped: four of the page's own polling
    intervals (RUN_LOG_POLL_SECONDS, in its data-poll-ms; tests/web_settings.py has them 0.25 s, production 2 s)."""
    page.wait_for_timeout(4 * int(page.get_attribute("#log", "data-poll-ms")) + 250)


def test_without_websockets_the_viewer_polls_until_the_server_answers_286(personas, portal_server):
    run = make_run(personas)
    write_log(run, ["before the page opened"])
    sink = logsink.LogSink(run)
    with browser_page() as page:
        polls = open_as_viewer_without_websockets(page, portal_server, run)
        for i in range(2, 6):
            sink.write(f"{GREEN}polled line {i}{RESET}")
        sink.flush()
        page.wait_for_selector("#L5")
        assert page.locator("#L5 .ansi-green-fg").inner_text() == "polled line 5"
        sink.close()
        finish(run, RunStatus.FAILED, "STEP 2/3 failed: exit status 1", lines=5)
        page.wait_for_selector("#run-result .run-result-failed")
        assert "STEP 2/3 failed" in page.locator("#run-result").inner_text()
        page.wait_for_selector("#run-status [data-run-status=failed]")
        assert seqs_on_page(page) == [1, 2, 3, 4, 5]
        stopped_at = len(polls)
        wait_four_polls(page)  # 286 stopped htmx polling
        assert len(polls) == stopped_at


def test_a_viewer_refused_for_too_many_open_live_logs_reads_the_log_by_polling(personas, portal_server):
    run = make_run(personas)
    write_log(run, ["before the page opened"])
    sink = logsink.LogSink(run)
    with browser_page() as page:
        page.route_web_socket(re.compile(r".*/ws/runs/.*"), lambda ws: ws.close(
            code=4429, reason="You have 20 live logs open, the most allowed: this one is read by polling."))
        sign_in(page, portal_server.url, "viewer")
        page.goto(f"{portal_server.url}/runs/{run.pk}/")
        page.wait_for_selector("#log-conn[data-state=polling]", timeout=15000)
        assert page.locator("#log-conn").inner_text().strip() == "polling: too many live logs open"
        sink.write("a line read by polling")
        sink.flush()
        page.wait_for_selector("#L2")
        assert seqs_on_page(page) == [1, 2]
        sink.close()
        finish(run, lines=2)


@pytest.mark.parametrize("loses", ["membership", "session"])
def test_the_polling_fallback_stops_and_says_so_when_the_reader_loses_access(personas, portal_server, loses):
    run = make_run(personas)
    write_log(run, ["a line"])
    with browser_page() as page:
        polls = open_as_viewer_without_websockets(page, portal_server, run)
        if loses == "membership":
            services.membership_remove(team=personas.team, user=personas.viewer, actor=None)
        else:
            page.context.clear_cookies()  # the session ended: a poll is redirected to the login page
        page.wait_for_selector("#log-conn[data-state=refused]", timeout=10000)
        label = "no access to this log" if loses == "membership" else "signed out: reload to sign in"
        assert page.locator("#log-conn").inner_text().strip() == label
        assert seqs_on_page(page) == [1]  # nothing of the 404 or the login page landed in the log
        stopped_at = len(polls)
        wait_four_polls(page)  # neither htmx polling nor the websocket retries started polling again
        assert len(polls) == stopped_at


def test_an_outsider_gets_no_page_and_a_refused_socket(personas, portal_server):
    run = make_run(personas)
    write_log(run, ["secret line"])
    with browser_page() as page:
        sign_in(page, portal_server.url, "outsider")
        response = page.goto(f"{portal_server.url}/runs/{run.pk}/")
        assert response.status == 404 and "secret line" not in page.content()
        closed = page.evaluate("""(path) => new Promise((resolve) => {
            const messages = [];
            const ws = new WebSocket(`ws://${location.host}${path}`);
            ws.onmessage = (e) => messages.push(e.data);
            ws.onclose = (e) => resolve({code: e.code, messages});
        })""", f"/ws/runs/{run.pk}/")
        assert closed == {"code": 4404, "messages": []}


def test_screenshot_of_a_build_log_with_sections_and_colours(personas, portal_server):
    """Not a check: the picture of the viewer mid-build that people look at (test-artifacts/log-viewer-mid-build.png)."""
    run = make_run(personas)
    sink = logsink.LogSink(run)
    for line in [*build_output(12), "::group::Converting to qcow2", "Manifest generation step", "Image building step",
                 "Pipeline build: " + "a1" * 32, "Build", "  root: <host>",
                 "org.osbuild.rpm: " + "b2" * 32 + " {", '  "gpgkeys": []', "}",
                 f"{RED}error: {RESET}mirror unreachable, retrying (1/3)", "org.osbuild.selinux: " + "c3" * 32 + " {}",
                 "  relabelling /usr"]:
        sink.write(line)
        sink.flush()
        time.sleep(0.05)
    with browser_page(height=1000) as page:
        sign_in(page, portal_server.url, "developer")
        page.goto(f"{portal_server.url}/runs/{run.pk}/")
        page.wait_for_selector("#log-conn[data-state=live]")
        page.check("#log-ts")
        page.click("#L1 .sec-toggle")
        page.wait_for_timeout(1200)
        path = screenshot(page, "log-viewer-mid-build")
        assert path.stat().st_size > 20_000
    sink.close()
    finish(run, lines=sink.last_seq)


PYTHON_TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "/usr/bin/osbuild", line 33, in <module>',
    "    sys.exit(load_entry_point('osbuild==137', 'console_scripts', 'osbuild')())",
    '  File "/usr/lib/python3.9/site-packages/osbuild/objectstore.py", line 260, in export',
    "    subprocess.run(cp_cmd, check=True)",
    "subprocess.CalledProcessError: Command '['cp', '--reflink=auto', '-a', "
    "'/store/stage/uuid-2a80d908de34479bbe0b4edc1f4e6423/data/tree/.', '/output/image']' returned non-zero exit status 1.",
]
GO_DUMP = [
    "panic: runtime error: invalid memory address or nil pointer dereference",
    "goroutine 1 [running]:",
    "main.cmdBuild(0xc0001b2000, {0xc00011e0a0, 0x2, 0x2})",
    "\t/build/bib/cmd/bootc-image-builder/main.go:412 +0x1f4",
    "created by main.main in goroutine 1",
]


def test_tracebacks_fold_into_their_first_line_with_the_exception_as_summary(personas, portal_server):
    run = make_run(personas)
    write_log(run, ["building the disk image", *GO_DUMP, "retrying once"])  # on the page when it opens
    sink = logsink.LogSink(run)  # goes on from line 8
    with browser_page(height=800) as page:
        sign_in(page, portal_server.url, "viewer")
        page.goto(f"{portal_server.url}/runs/{run.pk}/")
        page.wait_for_selector("#log-conn[data-state=live]")
        # A Go dump already stored: "goroutine 1 [running]:" (line 3) holds its three frame lines.
        assert page.locator("#L3 .tb-fold").inner_text() == "▸ 3 more lines: created by main.main in goroutine 1"
        assert not page.locator("#L4").is_visible() and not page.locator("#L6").is_visible()
        assert page.locator("#L2").is_visible() and page.locator("#L7").is_visible()  # the panic line stays

        # A Python traceback arriving live in two batches, the exception last: it folds as it grows.
        for line in ["Copying the image out", *PYTHON_TRACEBACK[:3]]:
            sink.write(line)
        sink.flush()
        live.wait_published()
        page.wait_for_selector("#L11", state="attached")
        assert page.locator("#L9 .tb-fold").inner_text().startswith("▸ 2 more lines:")
        for line in [*PYTHON_TRACEBACK[3:], "2025/06/18 09:07:14 error: cannot run osbuild: exit status 1"]:
            sink.write(line)
        sink.flush()
        live.wait_published()
        page.wait_for_selector("#L15")
        summary = page.locator("#L9 .tb-fold").inner_text()
        assert summary.startswith("▸ 5 more lines: subprocess.CalledProcessError: Command '['cp', '--reflink=auto'")
        assert summary.endswith("…")  # the exception line is long: the summary is cut, the line is not
        assert [page.locator(f"#L{seq}").is_visible() for seq in range(8, 16)] == [
            True, True, False, False, False, False, False, True]
        screenshot(page, "log-viewer-traceback-folded")

        page.click("#L9 .tb-fold")  # unfolded: every line of it, and the button folds it again
        assert all(page.locator(f"#L{seq}").is_visible() for seq in range(9, 15))
        assert page.locator("#L9 .tb-fold").inner_text() == "▾ fold the traceback (5 lines)"
        screenshot(page, "log-viewer-traceback-unfolded")
        page.click("#L9 .tb-fold")
        assert not page.locator("#L12").is_visible()

        page.evaluate("window.location.hash = '#L12'")  # a permalink into a folded traceback unfolds it
        wait_js(page, "getComputedStyle(document.getElementById('L12')).display !== 'none'")
    sink.close()
    finish(run, RunStatus.FAILED, "osbuild failed", lines=sink.last_seq)
