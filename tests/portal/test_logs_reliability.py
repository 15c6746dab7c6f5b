"""The live log when things break, against real processes: Redis restarted mid-stream, the web (ASGI) process killed,
and an outsider knocking. The database is the source of truth: every viewer ends with lines 1..N, each exactly once.

Websocket viewers here are bench/logs/viewers.py (the benchmark's crowd): they reconnect with ?after=<last line> like
the browser does, and count lost and duplicated lines.
"""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.db import connections

from portal import live, logsink, services
from portal.models import RunKind, RunStatus
from tests.browser import browser_page, sign_in
from tests.helpers import ROOT, free_port, wait_for
from tests.plugins.processes import PortalProcess, subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

VIEWERS = ROOT / "bench" / "logs" / "viewers.py"


def make_run(personas):
    run = services.run_create(kind=RunKind.BUILD, title="reliability", team=personas.team, started_by=personas.developer)
    services.run_start(run)
    return run


def session_cookie(user):
    from django.test import Client

    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return f"sessionid={client.cookies['sessionid'].value}"


def start_viewers(server_url, run, user, *, count, expect, timeout=120):
    url = server_url.replace("http://", "ws://") + f"/ws/runs/{run.pk}/"
    process = subprocess.Popen([sys.executable, str(VIEWERS), "--url", url, "--cookie", session_cookie(user),
                                "--count", str(count), "--expect", str(expect), "--timeout", str(timeout)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout.readline().strip() == "READY"
    return process


def results_of(process):
    out = process.stdout.read()
    process.wait(180)
    lines = out.strip().splitlines()
    assert lines, f"the viewers printed no result (exit status {process.returncode})"
    return json.loads(lines[-1])


def stream(run, count, *, per_second, during=None):
    """Write `count` lines at about `per_second`, calling during(i) after each line (to break things mid-stream)."""
    sink = logsink.LogSink(run)
    for i in range(1, count + 1):
        sink.write(f"line {i}")
        sink.poll()
        if during:
            during(i)
        time.sleep(1 / per_second)
    sink.close()
    services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=count)
    live.wait_published()


def test_every_viewer_ends_with_every_line_exactly_once_when_redis_restarts_mid_stream(
        personas, portal_server, redis_server):
    run = make_run(personas)
    viewers = start_viewers(portal_server.url, run, personas.viewer, count=25, expect=1200)
    restarted = []

    def restart_redis_at_400(i):
        if i == 400:
            redis_server.restart()  # every group membership and every queued message is gone
            restarted.append(time.monotonic())

    stream(run, 1200, per_second=300, during=restart_redis_at_400)
    result = results_of(viewers)
    assert restarted
    assert result["complete"] == 25, result
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["received"] == 25 * 1200, result


def test_an_outsider_gets_a_refused_socket_and_no_lines(personas, portal_server):
    run = make_run(personas)
    sink = logsink.LogSink(run)
    sink.write("secret\nmore secret")
    sink.close()
    viewer = start_viewers(portal_server.url, run, personas.outsider, count=1, expect=2, timeout=20)
    result = results_of(viewer)
    assert result["close_codes"] == [4404] and result["received"] == 0 and result["complete"] == 0


@pytest.fixture
def restartable_web(redis_server, tmp_path, transactional_db):
    """A daphne that can be killed and started again on the same port."""
    port = free_port()
    started = []

    def start():
        args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"]
        process = PortalProcess(f"web{len(started)}", args, subprocess_env(redis_server.url), tmp_path)
        started.append(process)

        def listens():
            import socket

            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(listens, timeout=30, what="daphne to listen")
        return process

    start.url = f"http://127.0.0.1:{port}"
    yield start
    for process in started:
        process.stop()


def test_the_browser_reconnects_and_resumes_when_the_web_process_is_killed(personas, restartable_web, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the log is written next to Playwright's event loop
    web = restartable_web()
    run = make_run(personas)
    total = 400
    with browser_page() as page:
        sockets = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        sign_in(page, restartable_web.url, "viewer")
        page.goto(f"{restartable_web.url}/runs/{run.pk}/")
        page.wait_for_selector("#log-conn[data-state=live]")
        page.evaluate("window.sameDocument = 'yes'")

        def write_then_hang_up():
            try:
                stream(run, total, per_second=80)
            finally:
                connections.close_all()  # this thread's own connection would outlive the test database

        writer = threading.Thread(target=write_then_hang_up, daemon=True)
        writer.start()
        page.wait_for_selector("#L60")
        web.stop(signal.SIGKILL)  # the ASGI process dies mid-stream
        page.wait_for_selector("#log-conn:not([data-state=live])")
        time.sleep(1.5)  # lines keep being written meanwhile
        restartable_web()
        writer.join(30)
        page.wait_for_selector(f"#L{total}", timeout=30000)
        page.wait_for_selector("#run-status [data-run-status=succeeded]", timeout=30000)
        seqs = page.evaluate("[...document.querySelectorAll('#log-lines .log-line')].map(r => +r.id.slice(1))")
        assert seqs == list(range(1, total + 1))  # contiguous, each line once
        assert page.evaluate("window.sameDocument") == "yes"
        assert len(sockets) >= 2 and all(f"/ws/runs/{run.pk}/?after=" in url for url in sockets)
        assert any(not url.endswith("?after=0") for url in sockets[1:])  # it resumed after the last line it had
