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

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

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


@pytest.fixture
def start_worker(redis_server, tmp_path, transactional_db):
    """start_worker(queues="default", **env) -> a real Celery worker process on the test database and Redis (by default
    on the queues `make run`'s worker consumes). Returns once its heartbeat says it consumes them."""
    started = []

    def start(queues=None, concurrency=2, **env):
        from builds.queues import local_queues
        from portal import workers

        queues = queues or ",".join([*local_queues(), "hosts", "default"])
        name = f"worker-{len(started)}-{os.getpid()}@"
        args = [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", queues, "-c", str(concurrency),
                "-l", "INFO", "-n", name + "%h", "--without-heartbeat", "--without-mingle", "--without-gossip"]
        worker = PortalProcess(f"worker{len(started)}", args, subprocess_env(redis_server.url, **env), tmp_path)
        started.append(worker)
        wait_for(lambda: any(w.name.startswith(name) for w in workers.alive()) or worker.process.poll() is not None,
                 timeout=60, what="the worker's heartbeat")
        assert worker.process.poll() is None, worker.output()[-3000:]
        worker.hostname_prefix = name
        return worker

    yield start
    # Killed, not asked to stop, as portal_server's daphne is: the test is over, and a warm shutdown (finish the tasks,
    # give back what was prefetched, close the pool) took 2-4 s a worker on a busy machine. What a warm shutdown would
    # also do is done here: the worker's heartbeat goes, so a later test's worker of the same name is not taken for
    # alive before it beats. (What it had prefetched stays unacknowledged in the suite's Redis, out of later tests' way.)
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


@pytest.fixture
def portal_server(redis_server, tmp_path, transactional_db):
    """A real daphne serving the portal (HTTP and websockets) on a free loopback port; yields its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"]
    server = PortalProcess("web", args, subprocess_env(redis_server.url), tmp_path)

    def answers():
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
    yield server
    # Killed, not asked to stop: the test is over, and a daphne told to stop spends seconds collecting its garbage
    # before it exits (0.7 s of CPU, 3-4 s on a busy machine), for every test that had one.
    server.stop(signal.SIGKILL)
