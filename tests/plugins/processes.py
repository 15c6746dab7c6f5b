"""Real portal processes (web, worker) on the test database and the suite's Redis."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.helpers import ROOT, free_port, wait_for


def subprocess_env(redis_url, **extra):
    """Environment for a portal process (web, worker) that must see the test database and the suite's Redis."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        database_url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS),
        "AUDIT_HMAC_KEY": settings.AUDIT_HMAC_KEY,
        "AUDIT_CHECKPOINT_PATH": str(settings.AUDIT_CHECKPOINT_PATH),
        "DEBUG": "true",
        "PYTHONUNBUFFERED": "1",
        "REGISTRY_URL": settings.REGISTRY_URL,
        "REGISTRY_INSECURE": "true" if settings.REGISTRY_INSECURE else "false",
        "EGRESS_ALLOW": ",".join(settings.EGRESS_ALLOW),
        # The crowds of viewers in test_logs_reliability.py are one user (the cap itself: test_consumer_access.py).
        "RUN_LOG_SOCKETS_PER_USER": "100",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


class PortalProcess:
    def __init__(self, name, args, env, log_dir):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    offset = 0

    def output(self):
        """What the process wrote since it started, or since output_from_here()."""
        self.log.flush()
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def output_from_here(self):
        self.log.flush()
        self.offset = self.log_path.stat().st_size

    def stop(self, sig=None):
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, sig or signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


def launch_worker(redis_url, directory, name, queues=None, concurrency=2, **env):
    """A real Celery worker process, `name` + `@host`, on the test database and Redis (by default on the queues `make
    run`'s worker consumes), logging to `directory`/`name`.log. Returns once its heartbeat says it consumes them; one
    that does not is killed."""
    from builds.queues import local_queues
    from portal import workers

    queues = queues or ",".join([*local_queues(), "hosts", "default"])
    args = [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", queues, "-c", str(concurrency),
            "-l", "INFO", "-n", name + "@%h", "--without-heartbeat", "--without-mingle", "--without-gossip"]
    worker = PortalProcess(name, args, subprocess_env(redis_url, **env), directory)
    worker.hostname_prefix = name + "@"
    try:
        wait_for(lambda: any(w.name.startswith(worker.hostname_prefix) for w in workers.alive())
                 or worker.process.poll() is not None, timeout=60, what="the worker's heartbeat")
        assert worker.process.poll() is None, worker.output()[-3000:]
    except AssertionError:
        worker.stop(signal.SIGKILL)
        raise
    return worker


def end_workers(started):
    """Killed, not asked to stop, as portal_server's daphne is: the test is over, and a warm shutdown (finish the tasks,
    give back what was prefetched, close the pool) took 2-4 s a worker on a busy machine. What a warm shutdown would
    also do is done here: the worker's heartbeat goes, so a later test's worker of the same name is not taken for
    alive before it beats. (What it had prefetched stays unacknowledged in the suite's Redis, out of later tests' way.)"""
    import redis

    from portal import workers

    for worker in started:
        worker.stop(signal.SIGKILL)
    try:
        for beat in workers.alive():
            if any(beat.name.startswith(worker.hostname_prefix) for worker in started):
                workers.forget(name=beat.name)
    except redis.RedisError:  # the test left Redis down: the heartbeats expire on their own
        pass


@pytest.fixture
def start_worker(redis_server, tmp_path, transactional_db):
    """start_worker(queues="default", **env) -> a real Celery worker process on the test database and Redis (by default
    on the queues `make run`'s worker consumes). Returns once its heartbeat says it consumes them."""
    started = []

    def start(queues=None, concurrency=2, **env):
        worker = launch_worker(redis_server.url, tmp_path, f"worker-{len(started)}-{os.getpid()}", queues, concurrency,
                               **env)
        started.append(worker)
        return worker

    yield start
    end_workers(started)


@pytest.fixture
def in_process_worker(redis_server, settings):
    """The test process runs this machine's build and conversion tasks itself (it calls the pipeline as the task would),
    so it writes the heartbeat a worker consuming their queues would write, and enqueueing finds a consumer; the task
    that is sent waits unread in the broker. in_process_worker(*queues) serves more queues (a remote builder's)."""
    from builds.queues import local_queues
    from portal import workers

    names = []
    settings.WORKER_HEARTBEAT_SECONDS = 3600  # the heartbeat outlasts the test

    def serve(*queues):
        name = f"in-process-{os.getpid()}-{len(names)}@tests"
        workers.beat(name=name, queues=queues, concurrency=1)
        names.append(name)

    serve(*local_queues())
    yield serve
    for name in names:
        workers.forget(name=name)


# What a web process of the portal is handed that is not the same for every test: the test's own audit checkpoint file
# (the shared process reads the test's through a link it is handed once, see WebServers), the test pytest is running,
# and the permission a test gives itself to use the ORM next to Playwright's event loop (never the server's business:
# production's web process runs without it).
NOT_THE_SERVERS_CONCERN = ("AUDIT_CHECKPOINT_PATH", "PYTEST_CURRENT_TEST", "DJANGO_ALLOW_ASYNC_UNSAFE")


def start_web(env, directory, name="web"):
    """A real daphne serving the portal (HTTP and websockets) on a free loopback port, listening when this returns."""
    port = free_port()
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"]
    server = PortalProcess(name, args, env, directory)

    def answers():
        if server.process.poll() is not None:
            raise AssertionError(f"daphne exited: {server.output()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    # Daphne needs some 3 s of CPU to import the portal: 39 s at a load of 18 on two shared cores (measured).
    try:
        wait_for(answers, timeout=120, what="daphne to listen")
    except AssertionError:
        server.stop(signal.SIGKILL)  # a daphne that failed the wait is not left behind to serve nobody
        raise
    server.url = f"http://127.0.0.1:{port}"
    return server


class WebServers:
    """The web processes of one xdist worker, kept from one test to the next: a test gets the one started with the
    environment it would start one with (the same database, Redis, registry and egress list: what subprocess_env hands
    it), or a new one. The last KEPT are kept (a few tests bring an egress list or a registry of their own).

    Starting daphne costs some 3 s of CPU (importing the portal), and some fifty tests use one. What a test leaves in a
    kept process is nothing another test can see: the database is flushed after each of these (transactional) tests,
    and its rows come back with new ids (a flush never resets a sequence), so nothing the process cached under an id
    or a session is found again; sessions and rate limits are in the database and the suite's Redis, as they were for
    a daphne of the test's own. The process reads the running test's audit checkpoints through a link that each test
    points at its own file. One that outlived the Redis it was started with (a test stopped it), or died, is replaced.
    Their settings are tests/web_settings.py: the portal's, with the suite's quick password hasher first."""

    KEPT = 3

    def __init__(self, directory):
        self.directory = Path(directory)
        self.servers = {}  # key -> server, the last used last
        self.started = 0

    def serving(self, env, checkpoints, redis):
        """The kept server for this environment and this run of Redis (started when there is none), reading
        `checkpoints` as its audit checkpoint file."""
        key = tuple(sorted((name, value) for name, value in env.items() if name not in NOT_THE_SERVERS_CONCERN))
        server = self.servers.pop(key, None)
        if server is not None and (server.redis is not redis or server.process.poll() is not None):
            server.stop(signal.SIGKILL)
            server = None
        if server is None:
            self.started += 1
            link = self.directory / f"audit-checkpoints-{self.started}.jsonl"
            env = {name: value for name, value in env.items() if name not in NOT_THE_SERVERS_CONCERN}
            env.update(AUDIT_CHECKPOINT_PATH=str(link), DJANGO_SETTINGS_MODULE="tests.web_settings")
            server = start_web(env, self.directory, name=f"web{self.started}")
            server.checkpoints, server.redis = link, redis
        self.servers[key] = server
        while len(self.servers) > self.KEPT:
            self.stop(next(iter(self.servers.values())))
        server.checkpoints.unlink(missing_ok=True)
        server.checkpoints.symlink_to(checkpoints)
        server.output_from_here()
        return server

    def stop(self, server):
        """Killed, not asked to stop: a daphne told to stop spends seconds collecting its garbage before it exits
        (0.7 s of CPU, 3-4 s on a busy machine)."""
        self.servers = {key: kept for key, kept in self.servers.items() if kept is not server}
        server.stop(signal.SIGKILL)

    def stop_all(self):
        for server in list(self.servers.values()):
            self.stop(server)


@pytest.fixture(scope="session")
def web_servers(django_db_setup, redis_server, tmp_path_factory):
    servers = WebServers(tmp_path_factory.mktemp("web"))
    yield servers
    servers.stop_all()


@pytest.fixture
def portal_server(web_servers, redis_server, transactional_db):
    """A real daphne serving the portal (HTTP and websockets) on a loopback port, on the test database and the suite's
    Redis; yields it (`.url`, `.output()`: what it logged during this test). The process is the worker's kept one
    (WebServers) when the test would start it with the same environment as the last test did."""
    yield web_servers.serving(subprocess_env(redis_server.url), settings.AUDIT_CHECKPOINT_PATH, redis_server.process)


def pytest_sessionfinish(session):
    """The worker's kept Chromium (tests/browser.py), if a browser test started it, ends with the session."""
    browser = sys.modules.get("tests.browser")
    if browser is not None:
        browser.KeptChromium.stop()
