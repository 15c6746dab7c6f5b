"""Shared fixtures: the personas, a real Redis of the suite's own, and real portal processes (web, worker) on the test
database.

Nothing here mocks the database or the portal's code. In CI (CI=true) a missing tool fails the test instead of skipping it.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management.sql import sql_flush as _django_sql_flush
from django.db import connection
from django.test.utils import override_settings

ROOT = Path(__file__).resolve().parent.parent

# The apps' fixtures that tests of several apps use (a test names them as parameters, with no import). The fixtures
# of one folder's tests only are in that folder's conftest.py.
pytest_plugins = [
    "tests.api.fixtures",
    "tests.builds.fixtures",
    "tests.diskimages.bootimages",
    "tests.diskimages.fixtures",
    "tests.portal.fixtures",
    "tests.releases.fixtures",
]


def _shared_dir():
    """The team's shared material (docs and the real-world corpus) sits next to the repository; a clone elsewhere (CI)
    finds it through PORTAL_SHARED_DIR or at /work/shared."""
    candidates = [os.environ.get("PORTAL_SHARED_DIR", ""), ROOT.parent / "shared", "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "corpus").is_dir():
            return Path(candidate).resolve()
    return (ROOT.parent / "shared").resolve()


SHARED = _shared_dir()
CORPUS = SHARED / "corpus"
SHARED_DOCS = SHARED / "docs"
ARTIFACTS = ROOT / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_tool(*names):
    """Skip when a tool is missing on a laptop; fail in CI, where every tool must be installed."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"missing tool(s): {', '.join(missing)}; `scripts/system-deps.sh test` installs them"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_in_thread(function, *args):
    """Start `function(*args)` in a thread of its own, as a worker would run it, closing that thread's database
    connection when it ends (so the test database can be flushed). Returns the started thread."""

    def run():
        try:
            function(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ProcessWatcher:
    """Reads every process's command line on the machine while something runs (`with ProcessWatcher() as w:`), so a
    test can show a secret never appeared in one: `/proc/PID/cmdline` is readable by every user."""

    def __init__(self):
        self.seen, self.stop = set(), threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            self.seen.add(f.read().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        pass
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# --- Spreading the suite over xdist's workers -------------------------------------------------------------------------

# Fixtures that start real processes (portal processes, podman, sshd, skopeo against the registry): a test that uses one
# is marked `processes` without saying so itself. Tests that start processes of their own carry the marker.
PROCESS_FIXTURES = {"start_worker", "portal_server", "podman_store", "sshd", "seed_images", "bib_standin", "bootable_base",
                    "moto_server", "moto_server_checking_keys"}


def _weight(item):
    """2 for a slow test, 1 for one that starts processes (or a browser), 0 for the rest."""
    if item.get_closest_marker("slow"):
        return 2
    return 1 if item.get_closest_marker("processes") else 0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under `-n N --dist worksteal` (pyproject.toml), worker k starts with the k-th contiguous share of this order, and
    a worker that runs out steals from the end of the busiest one's queue. So the slow tests and those that start
    processes are dealt out to the workers in turn, each share starting with its heavy ones: the workers get the same
    amount of heavy work, and what is left to steal at the end is quick tests, never a two-minute one that keeps the
    other worker waiting (with `--dist load` one worker once idled for eight minutes)."""
    for item in items:
        if item.get_closest_marker("browser") or PROCESS_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.processes)
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    if workers < 2:
        items[:] = _database_replacers_first(items)
        return
    heavy = sorted((item for item in items if _weight(item)), key=_weight, reverse=True)
    light = [item for item in items if not _weight(item)]
    shares = []
    for k in range(workers):  # the sizes worksteal's first distribution gives: len // remaining workers, in turn
        left = len(items) - sum(len(share) for share in shares)
        shares.append([None] * (left // (workers - k)))
    ordered = []
    for k, share in enumerate(shares):
        mine = heavy[k::workers]
        take = max(0, len(share) - len(mine))
        ordered += mine + light[:take]
        light = light[take:]
    items[:] = _database_replacers_first(ordered + light)


def _database_replacers_first(items):
    """Tests that drop the test database and restore it from a backup run before anything else in their worker. The
    drop ends every connection to the database, and a connection that an earlier test left with a thread of the worker
    then fails a later test ("terminating connection due to administrator command"); at the start nothing has been left
    yet. They open the first share, so the first worker runs them first (worksteal never steals the head of a queue)."""
    first = [item for item in items if item.get_closest_marker("replaces_the_database")]
    return first + [item for item in items if item not in first]


def _session_has_a_test_database(session):
    """pytest-django makes the test database only when a collected test uses it; without one, `connection` is the
    configured database itself (a developer's own), which the suite's set-up and clean-up must leave alone."""
    from pytest_django.fixtures import _get_databases_for_setup

    aliases, _serialized = _get_databases_for_setup(session.items)
    return "default" in aliases


@pytest.fixture(scope="session", autouse=True)
def close_stray_connections_at_the_end(django_db_setup, django_db_blocker, request):
    """Threads of servers and consumers may leave a connection open; end them so the test database can be dropped."""
    yield
    if not _session_has_a_test_database(request.session):
        return
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")


# Rows that migrate's post_migrate made and no test changes: the content types and the permissions. A test's flush keeps
# them, so that Django's own post_migrate receivers, which would otherwise make them again app by app (some 150 of the
# 270 queries a flush took), find nothing to do and are not called.
KEPT_BY_A_FLUSH = ("django_content_type", "auth_permission")


def _flush_by_delete(style, connection, reset_sequences=True, allow_cascade=False):
    """What Django's flush runs at the end of every transactional test, on PostgreSQL: DELETE FROM each table in one
    transaction instead of one TRUNCATE of them all. TRUNCATE gives each of some sixty tables a new file, which took
    1.5-2.5 s per test on a busy machine; the DELETEs of a test's few rows take about 0.1 s. Constraints are checked
    once every row is gone, and the tables' own triggers (the audit trail refuses DELETE, the host tallies count it) are off
    while their rows go, as they were for TRUNCATE. The content types and permissions stay (KEPT_BY_A_FLUSH). Anything
    else (SQLite, which deletes anyway; a flush that resets sequences) is left to Django."""
    if connection.vendor != "postgresql" or reset_sequences:
        _post_migrate_after_a_flush.kept = False
        return _django_sql_flush(style, connection, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    tables = [table for table in connection.introspection.django_table_names(only_existing=True, include_views=False)
              if table not in KEPT_BY_A_FLUSH]
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal")
        triggered = sorted({name.strip('"') for (name,) in cursor.fetchall()}.intersection(tables))
    quote = connection.ops.quote_name
    _post_migrate_after_a_flush.kept = True
    statements = ["SET CONSTRAINTS ALL DEFERRED",
                  *(f"ALTER TABLE {quote(table)} DISABLE TRIGGER USER" for table in triggered),
                  *(f"DELETE FROM {quote(table)}" for table in tables),
                  "SET CONSTRAINTS ALL IMMEDIATE",  # the checks run now: a table with checks pending cannot be altered
                  *(f"ALTER TABLE {quote(table)} ENABLE TRIGGER USER" for table in triggered)]
    return [";\n".join(statements)]  # one round trip to the server, not some eighty


def _post_migrate_after_a_flush(verbosity, interactive, db, **kwargs):
    """The post_migrate signal a flush sends, without Django's receivers that make content types and permissions when
    the flush kept them (_flush_by_delete). The portal's own receivers (the personas, hosts' tallies) run as ever."""
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes
    from django.core.management.sql import emit_post_migrate_signal
    from django.db.models.signals import post_migrate

    if not _post_migrate_after_a_flush.kept:
        return emit_post_migrate_signal(verbosity, interactive, db, **kwargs)
    post_migrate.disconnect(create_permissions, dispatch_uid="django.contrib.auth.management.create_permissions")
    post_migrate.disconnect(create_contenttypes)
    try:
        return emit_post_migrate_signal(verbosity, interactive, db, **kwargs)
    finally:  # connected again as django.contrib.auth's and contenttypes' AppConfig.ready() connect them
        post_migrate.connect(create_permissions, dispatch_uid="django.contrib.auth.management.create_permissions")
        post_migrate.connect(create_contenttypes)


_post_migrate_after_a_flush.kept = False


@pytest.fixture(scope="session", autouse=True)
def transactional_tests_end_with_deletes():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("django.core.management.commands.flush.sql_flush", _flush_by_delete)
        patch.setattr("django.core.management.commands.flush.emit_post_migrate_signal", _post_migrate_after_a_flush)
        yield


def allow_egress(*entries):
    """Add entries to EGRESS_ALLOW (portal.egress) for the loopback servers a test starts; returns a function that takes
    them out again. The tests' allow-list starts empty, like production's, and holds exactly what the running tests
    need; worker processes they start get the same list."""
    settings.EGRESS_ALLOW = [*settings.EGRESS_ALLOW, *entries]

    def undo():
        settings.EGRESS_ALLOW = [entry for entry in settings.EGRESS_ALLOW if entry not in entries]

    return undo


class QuickPasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 with 1,000 rounds instead of a million: a password check costs well under a millisecond instead
    of about 0.3 s of CPU (over a second when the machine is busy), and the suite checks passwords hundreds of times
    (every sign-in, every failed guess in the lockout tests). Its hashes are ordinary `pbkdf2_sha256$1000$...` strings,
    which the portal's processes started by tests check with the production hasher (and upgrade on sign-in)."""

    iterations = 1000


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing():
    """Hashes are made with QuickPasswordHasher. The production hasher stays listed after it, so a hash is still
    checked by the algorithm it names, and a quick hash is never upgraded during a test."""
    with override_settings(PASSWORD_HASHERS=["tests.conftest.QuickPasswordHasher", *settings.PASSWORD_HASHERS]):
        yield


@pytest.fixture(scope="session", autouse=True)
def egress_allows_nothing_at_first():
    """Whatever EGRESS_ALLOW the environment holds, the suite starts from an empty allow-list."""
    settings.EGRESS_ALLOW = []


@pytest.fixture(scope="session", autouse=True)
def short_lived_database_connections():
    """Threads (websocket consumers, the test server) must not keep connections that block dropping the test database."""
    connection.settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(autouse=True)
def audit_checkpoints_and_rate_limits_of_the_test(settings, tmp_path):
    """Each test's audit chain starts empty, so its checkpoints go to a file of its own; and its requests are counted
    against rate limits of its own (one test's API calls must not use up the next one's), as are its open log sockets."""
    settings.AUDIT_CHECKPOINT_PATH = tmp_path / "audit-checkpoints.jsonl"
    settings.RATE_LIMIT_KEY_PREFIX = f"test-ratelimit:{uuid.uuid4().hex}"
    settings.LOG_SOCKETS_KEY_PREFIX = f"test-log-sockets:{uuid.uuid4().hex}"


# --- Redis -----------------------------------------------------------------------------------------------------------


class RedisServer:
    """A real redis-server on a unix socket of the suite's own, so tests never touch anyone's 6379 and can restart it."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.socket = self.directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.binary = shutil.which("redis-server") or self._embedded()
        self.process = None

    @staticmethod
    def _embedded():
        from portal.demo.management.commands.run_portal import embedded_redis_server

        return embedded_redis_server()

    def start(self):
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, what="redis to answer")

    def _answers(self):
        import redis

        try:
            return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self):
        self.stop()
        self.start()
        _forget_broker_connections()


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    directory = tempfile.mkdtemp(prefix="portal-redis-")
    server = RedisServer(directory)
    server.start()
    _point_portal_at_redis(server.url)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def broker_stopped(redis_server):
    """The suite's Redis (broker and channel layer) is down inside the block, and back, with fresh connections, after."""
    redis_server.stop()
    try:
        yield
    finally:
        redis_server.start()
        _forget_broker_connections()


def _forget_broker_connections():
    """The test process's pooled broker connections died with the old server: drop them (as Celery does after a fork),
    so the next publish or control call (start_worker's ping) connects again instead of failing on a broken pipe."""
    from kombu import pools

    from portal.celery import app

    pools.reset()
    app._after_fork()


def _point_portal_at_redis(url, ca_file=""):
    """Every Redis client of the test process (settings, Channels, Celery) at `url`, as settings.py would make them."""
    from channels.layers import channel_layers

    from portal.celery import app
    from portal.environment import celery_broker_url, celery_broker_use_ssl, channel_layer_hosts

    settings.REDIS_URL, settings.REDIS_CA_FILE = url, ca_file
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = channel_layer_hosts(url, ca_file)
    channel_layers.backends.clear()
    app.conf.broker_url = celery_broker_url(url)
    app.conf.broker_use_ssl = celery_broker_use_ssl(url, ca_file)


# --- Personas --------------------------------------------------------------------------------------------------------


_password_hashes = {}


def make_user(username, *, helpdesk=False, superuser=False, password="correct horse battery"):
    """A user with a real password hash (computed once per password: hashing is slow on purpose)."""
    from django.contrib.auth.hashers import make_password

    from portal.models import User

    if password not in _password_hashes:
        _password_hashes[password] = make_password(password)
    user = User(username=username, email=f"{username}@example.com", is_helpdesk=helpdesk, is_superuser=superuser,
                is_staff=superuser, password=_password_hashes[password])
    user.save()
    return user


def make_team(name, **members):
    """make_team("Platform", developer=user, viewer=other) creates the team and its memberships."""
    from builds.releases.policy import stages_ensure_default
    from portal.models import Membership, Team

    team = Team.objects.create(name=name, slug=Team.slug_for(name))
    stages_ensure_default(team=team)
    for role, user in members.items():
        Membership.objects.create(team=team, user=user, role=role)
    return team


class Personas:
    """The suite's cast: a team ("Platform") with one member per role, help-desk, a superuser, and an outsider who is a
    developer in another team ("Other").

    The cast is made once per test database (`make_personas`), not once per test: each test reads it fresh (two
    queries instead of some thirty inserts), and what a test changes in it is rolled back after the test, or flushed
    and made again after a transactional one."""

    USERNAMES = {"viewer": "viewer", "developer": "developer", "approver": "approver", "approver2": "approver2",
                 "operator": "operator", "admin": "teamadmin", "helpdesk": "helpdesk", "superuser": "root",
                 "outsider": "outsider"}
    TEAMS = {"team": "Platform", "other_team": "Other"}

    def __init__(self):
        from portal.models import Team, User

        users = User.objects.in_bulk(self.USERNAMES.values(), field_name="username")
        teams = Team.objects.in_bulk([Team.slug_for(name) for name in self.TEAMS.values()], field_name="slug")
        for attribute, username in self.USERNAMES.items():
            setattr(self, attribute, users[username])
        for attribute, name in self.TEAMS.items():
            setattr(self, attribute, teams[Team.slug_for(name)])


def make_personas():
    """Put the cast in the test database, unless it is there."""
    from portal.models import Membership, User

    if User.objects.filter(username=Personas.USERNAMES["viewer"]).exists():
        return
    users = {attribute: make_user(username, helpdesk=attribute == "helpdesk", superuser=attribute == "superuser")
             for attribute, username in Personas.USERNAMES.items()}
    team = make_team("Platform", **{role: users[role] for role in ("viewer", "developer", "approver", "operator",
                                                                    "admin")})
    Membership.objects.create(team=team, user=users["approver2"], role="approver")
    make_team("Other", developer=users["outsider"])


def _personas_again_after_a_flush(sender, using="default", **kwargs):
    """A transactional test ends with a flush of every table, and Django's flush then sends post_migrate."""
    if sender.label == "portal" and using == "default":
        make_personas()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker, quick_password_hashing, request):
    """pytest-django's test database, with the personas in it."""
    from django.db.models.signals import post_migrate

    if not _session_has_a_test_database(request.session):
        yield
        return
    with django_db_blocker.unblock():
        make_personas()
    post_migrate.connect(_personas_again_after_a_flush, dispatch_uid="tests.personas")
    yield
    post_migrate.disconnect(dispatch_uid="tests.personas")


@pytest.fixture
def personas(db):
    return Personas()


@pytest.fixture
def without_personas(db):
    """A test that needs the database as a fresh install has it (the demo seed makes its own team and users) deletes
    the cast first; it is back after the test."""
    from portal.models import Team, User

    Team.objects.filter(slug__in=[Team.slug_for(name) for name in Personas.TEAMS.values()]).delete()
    User.objects.filter(username__in=Personas.USERNAMES.values()).delete()


@pytest.fixture
def client_for(client):
    """client_for(user) -> a test client logged in as user (None: anonymous)."""
    from django.test import Client

    def make(user):
        c = Client()
        if user is not None:
            c.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        return c

    return make


# --- Real portal processes on the test database ----------------------------------------------------------------------


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
        # The crowds of viewers in test_logs_reliability.py are one user (the cap itself: test_consumer.py).
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
