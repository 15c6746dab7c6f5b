"""`make run`'s foreground part (`manage.py run_portal`), for real: it serves the login page, keeps web, worker and beat
running (with its embedded Redis), its health endpoint says OK, and Ctrl-C stops everything it started.

(`make run` first creates .venv, installs and migrates: the suite runs in that .venv on a migrated test database.)
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, subprocess_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fetch(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None, ""


def running_in_groups(groups):
    """[(pid, command)] of the processes in these process groups that are not zombies."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        name, rest = text.rsplit(")", 1)
        state, _ppid, pgid = rest.split()[:3]
        if int(pgid) in groups and state != "Z":
            found.append((int(stat.parent.name), name.split("(", 1)[1]))
    return found


@pytest.fixture
def short_var_dir():
    """A var/ of its own with a short path: the embedded Redis's unix socket path must fit in 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mr-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_make_run_serves_the_portal_with_web_worker_and_beat_then_ctrl_c_stops_everything(
        redis_server, short_var_dir):
    port = free_port()
    no_tools = short_var_dir / "bin"  # no docker-registry, podman or busybox: no registry and no demo builds here
    no_tools.mkdir()
    env = subprocess_env(redis_server.url, PORTAL_VAR_DIR=short_var_dir, PATH=no_tools, HEALTH_TOKEN="make-run-test")
    del env["REDIS_URL"]  # as on a laptop: make run starts its embedded Redis
    log_path = short_var_dir / "make-run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "manage.py", "run_portal", "--port", str(port), "--fleet", "0"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    output = lambda: log_path.read_text(errors="replace")  # noqa: E731
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: fetch(url + "/login/")[0] == 200, timeout=60, what="the login page")
        assert "Log in" in fetch(url + "/login/")[1]
        assert f"Image Mode Portal on {url}/" in output() and "portal-demo" in output()
        assert "processes: redis, web, worker, beat" in output()

        wait_for(lambda: fetch(url + "/health/")[0] == 200, timeout=60, what="health to be OK")
        checks = json.loads(fetch(url + "/health/", {"Authorization": "Bearer make-run-test"})[1])["checks"]
        assert {name: check["ok"] for name, check in checks.items()} == {
            "database": True, "redis": True, "broker": True, "workers": True}
        # beat hands its periodic tasks to the worker (host polling every 15 s): all three are at work.
        wait_for(lambda: re.search(r"worker +\| .*Task hosts\.tasks\.poll_due_hosts\[[^]]+\] received", output()),
                 timeout=60, what="the worker to receive a task sent by beat")
        assert process.poll() is None
        started = dict(re.findall(r"system +\| (\w+) started \(pid=(\d+)\)", output()))
        assert sorted(started) == ["beat", "redis", "web", "worker"]
        pids = [int(pid) for pid in started.values()]
        assert {pid for pid, _ in running_in_groups(pids)} >= set(pids)

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
        process.wait(60)
        # Each process ran in a process group of its own: nothing of any of them is left running (a worker's pool
        # child may linger a moment as a zombie, until init reaps it).
        wait_for(lambda: not running_in_groups(pids), timeout=10, what="every process of make run to end")
        assert fetch(url + "/login/")[0] is None
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- make run's output ---\n{output()[-6000:]}") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for pid in [int(p) for p in re.findall(r"started \(pid=(\d+)\)", output())]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
