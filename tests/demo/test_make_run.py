"""`make run`, as the README says, on a clean clone of the working tree: the same Makefile, registry, configuration and
processes a newcomer gets. The only differences are free ports (PORT, REGISTRY_URL, FLEET_BASE_PORT), so the test never
collides with anyone's running portal.

Every process the clone starts carries a marker in its environment, so "nothing is left" is checked over every process
on the machine, including those that started a session of their own (podman, the registry, Redis).
"""

import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, free_port_range, require_tool, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(1200)]

# What the suite's own process has in its environment that a newcomer's shell does not.
NOT_A_NEWCOMERS = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DJANGO_SETTINGS_MODULE",
                   "PORTAL_VAR_DIR", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "HEALTH_TOKEN",
                   "PYTEST_ADDOPTS", "PYTEST_ARGS", "REGISTRY_INSECURE", "SITE_URL")


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The working tree's files as a commit of them would hold them (tracked and new, minus what .gitignore drops):
    no .venv, no var/, no .env."""
    require_tool("make", "git", "docker-registry")
    path = tmp_path_factory.mktemp("make-run") / "portal"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, path / name, follow_symlinks=False)
    yield path
    # Removed by a process of its own that the test does not wait for: the clone's .venv is some 16,000 files, and
    # unlinking them took 3-13 s of disk waits (0.4 s of CPU) at the end of the test.
    subprocess.Popen(["rm", "-rf", "--", str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # noqa: S603, S607
                     stderr=subprocess.DEVNULL, start_new_session=True)


class MakeRun:
    """`make run` in the clone, in a process group of its own, as a terminal's foreground job."""

    def __init__(self, clone, *, registry_port=None):
        self.marker = uuid.uuid4().hex
        self.port = free_port()
        self.agents_port = free_port()
        self.registry_port = registry_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in NOT_A_NEWCOMERS}
        env.update(PORT=str(self.port), AGENTS_PORT=str(self.agents_port), REGISTRY_URL=f"127.0.0.1:{self.registry_port}",
                   FLEET_BASE_PORT=str(free_port_range(5)), MAKE_RUN_TEST_MARKER=self.marker)
        self.log_path = clone.parent / f"make-run-{self.marker}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        return self.log_path.read_text(errors="replace")

    def ctrl_c(self):
        os.killpg(self.process.pid, signal.SIGINT)  # what the terminal does: the whole foreground group

    def left_running(self):
        """[(pid, command)] of every live process that inherited this run's environment."""
        found = []
        needle = f"MAKE_RUN_TEST_MARKER={self.marker}".encode()
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0") and _state(entry) != "Z":
                    found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except OSError:
                continue  # ended meanwhile
        return found

    def kill_everything(self):
        for pid, _command in self.left_running():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(10)


def _state(proc_dir):
    return (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]


def _alive(pid):
    try:
        return _state(Path(f"/proc/{pid}")) != "Z"
    except OSError:
        return False


def fetch(url, opener=None, data=None):
    try:
        with (opener or urllib.request.build_opener()).open(url, data=data, timeout=10) as response:
            return response.status, response.read().decode(), response.geturl()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), url
    except OSError:
        return None, "", url


def sign_in(url, username, password):
    """A browser's sign-in: the form's CSRF token and cookie, then the POST. Returns the signed-in opener."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    _status, page, _ = fetch(url + "/login/", opener)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password})
    status, page, landed = fetch(url + "/login/", opener, data=form.encode())
    assert (status, urllib.parse.urlsplit(landed).path) == (200, "/"), page[-2000:]
    return opener, page


def started_processes(output):
    return dict(re.findall(r"system +\| ([\w-]+) started \(pid=(\d+)\)", output))


def test_make_run_as_written_serves_the_portal_until_ctrl_c_stops_everything_and_fails_if_a_process_dies_starting(
        clone):
    """On the clean clone first; then, in the same clone (its .venv made and its SQLite migrated by the first run, as
    they would be on a newcomer's second `make run`), a run whose registry cannot start fails, naming it. Each run on a
    clean clone of its own spent some 40 s more making the .venv and migrating again."""
    the_portal_is_served_until_ctrl_c_stops_everything(clone)
    a_process_that_dies_during_start_up_is_named_with_its_last_lines_and_make_run_fails(clone)


def the_portal_is_served_until_ctrl_c_stops_everything(clone):
    run = MakeRun(clone)
    try:
        banner = f"Image Mode Portal on {run.url}/"
        wait_for(lambda: banner in run.output() or run.process.poll() is not None, timeout=900, interval=0.5,
                 what="make run's banner")
        assert banner in run.output()
        banner_seen = time.monotonic()
        # The banner waits for every process: the portal is healthy the moment it appears, worker included.
        status, body, _ = fetch(run.url + "/health/")
        assert (status, json.loads(body)) == (200, {"ok": True})
        processes = started_processes(run.output())
        assert list(processes) == ["redis", "registry", "web", "agents", "worker", "boottest-worker", "hosts-worker", "beat",
                                   "fleet"]
        # The agents' server answers the agents' endpoints, and only them.
        status, body, _ = fetch(f"http://127.0.0.1:{run.agents_port}/agent/v1/status", data=b"{}")
        assert status == 401, body
        assert fetch(f"http://127.0.0.1:{run.agents_port}/")[0] == 404
        assert "password for all: portal-demo" in run.output()

        _opener, dashboard = sign_in(run.url, "developer", "portal-demo")
        assert "developer" in dashboard and "Platform" in dashboard

        # The registry's own output goes to var/registry.log, not the console: every push makes it log "blob
        # unknown" at level error (the demo's builds push two images).
        registry_log = clone / "var" / "registry.log"
        wait_for(lambda: registry_log.exists() and "blob unknown" in registry_log.read_text(), timeout=300,
                 interval=1, what="the demo's pushes to reach the registry")
        assert not re.search(r"^\S+ registry +\|", run.output(), re.M)

        time.sleep(max(0.0, banner_seen + 10 - time.monotonic()))  # ten seconds after the banner, every process is up
        assert run.process.poll() is None and " exited " not in run.output()
        assert {name: _alive(int(pid)) for name, pid in processes.items()} == dict.fromkeys(processes, True)

        run.ctrl_c()
        # run_portal ends with 0, so make prints no error; make itself then ends as interrupted by SIGINT (as every
        # Ctrl-C'd command does, so a calling script stops too).
        assert run.process.wait(90) in (0, -signal.SIGINT)
        assert "make: ***" not in run.output()
        assert run.output().rstrip().endswith("everything stopped")
        wait_for(lambda: not run.left_running(), timeout=15, what="every process make run started to end")
        assert fetch(run.url + "/login/")[0] is None
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- make run's output ---\n{run.output()[-8000:]}\n"
                             f"--- left running ---\n{run.left_running()}") from None
    finally:
        run.kill_everything()


def a_process_that_dies_during_start_up_is_named_with_its_last_lines_and_make_run_fails(clone):
    with socket.socket() as taken:  # something else already listens on the registry's port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = MakeRun(clone, registry_port=taken.getsockname()[1])
        try:
            returncode = run.process.wait(900)
            output = run.output()
            assert returncode != 0
            assert re.search(r"system +\| registry exited during start-up \(exit code \d+\)\. Its last lines \(all of "
                             r"them in .*registry\.log\):", output)
            assert "address already in use" in output
            assert "Image Mode Portal on" not in output  # no banner
            assert "make: *** [Makefile" in output  # make says the command failed
            wait_for(lambda: not run.left_running(), timeout=15, what="every process make run started to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- make run's output ---\n{run.output()[-8000:]}\n"
                                 f"--- left running ---\n{run.left_running()}") from None
        finally:
            run.kill_everything()
