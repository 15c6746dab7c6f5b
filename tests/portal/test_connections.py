"""Database connections: on PostgreSQL each process borrows them from psycopg's pool, and none is kept per thread.

Django keeps a persistent connection per thread, and under ASGI every request's view runs in a thread of its own, so
with CONN_MAX_AGE above 0 the connections pile up until PostgreSQL refuses new clients ("too many clients already").
The pool bounds them per process instead, and spares each request a new backend (docs/deploy.md#database-connections).
"""

import http.client
import os
import subprocess
import sys
import threading
from collections import Counter
from urllib.parse import urlsplit

import pytest
from django.db import connection

from tests.helpers import IN_CI, ROOT, free_port, wait_for
from tests.plugins.processes import PortalProcess, subprocess_env

pytestmark = pytest.mark.processes

POSTGRES = "postgres://portal@127.0.0.1:5432/portal"
CLIENTS = 50
REQUESTS_PER_CLIENT = 6


def database_settings(**env):
    """DATABASES['default'] as the portal's settings read it from this environment, or the start-up error."""
    # The settings alone, not django.setup(): the pool and its refusals are read as settings.py loads (importing every
    # app's models besides took some 2 s of CPU a call).
    code = ("import json; from django.conf import settings as s; "
            "d = s.DATABASES['default']; print(json.dumps({'CONN_MAX_AGE': d['CONN_MAX_AGE'], "
            "'pool': d.get('OPTIONS', {}).get('pool'), 'no_server_cursors': d['DISABLE_SERVER_SIDE_CURSORS']}))")
    names = ("CONN_MAX_AGE", "DATABASE_POOL", "DATABASE_POOL_MIN_SIZE", "DATABASE_POOL_MAX_SIZE",
             "DATABASE_SERVER_SIDE_CURSORS")
    base = {k: v for k, v in os.environ.items() if k not in names}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True,
                            env={**base, "DJANGO_SETTINGS_MODULE": "portal.settings", **env})
    if result.returncode:
        return result.stderr.strip().splitlines()[-1]
    import json

    return json.loads(result.stdout)


def test_postgresql_connections_come_from_a_pool_and_none_is_kept_per_thread():
    read = database_settings(DATABASE_URL=POSTGRES)
    assert read["CONN_MAX_AGE"] == 0
    assert read["pool"] == {"min_size": 1, "max_size": 8, "timeout": 10.0, "max_idle": 300.0, "name": "portal"}
    assert read["no_server_cursors"] is False


def test_the_pool_is_sized_from_the_environment():
    read = database_settings(DATABASE_URL=POSTGRES, DATABASE_POOL_MIN_SIZE="0", DATABASE_POOL_MAX_SIZE="3")
    assert (read["pool"]["min_size"], read["pool"]["max_size"]) == (0, 3)


def test_without_the_pool_conn_max_age_keeps_connections_as_before():
    read = database_settings(DATABASE_URL=POSTGRES, DATABASE_POOL="false", CONN_MAX_AGE="30")
    assert (read["pool"], read["CONN_MAX_AGE"]) == (None, 30)


def test_behind_pgbouncer_server_side_cursors_can_be_turned_off():
    read = database_settings(DATABASE_URL=POSTGRES, DATABASE_POOL="false", DATABASE_SERVER_SIDE_CURSORS="false")
    assert read["no_server_cursors"] is True


def test_persistent_connections_with_the_pool_are_refused_at_start_naming_both_settings():
    error = database_settings(DATABASE_URL=POSTGRES, CONN_MAX_AGE="60")
    assert "CONN_MAX_AGE must be 0 while DATABASE_POOL is on" in error


def test_a_pool_that_cannot_hold_a_connection_is_refused_at_start():
    error = database_settings(DATABASE_URL=POSTGRES, DATABASE_POOL_MAX_SIZE="0")
    assert "DATABASE_POOL_MAX_SIZE (0) must be at least 1" in error
    error = database_settings(DATABASE_URL=POSTGRES, DATABASE_POOL_MIN_SIZE="5", DATABASE_POOL_MAX_SIZE="2")
    assert "DATABASE_POOL_MIN_SIZE (5) between 0 and it" in error


def backends_of(application_name):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                       [application_name])
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def web_with_a_pool_of_four(redis_server, tmp_path):
    """A daphne whose connections are named in pg_stat_activity, with a pool of at most four, and a request that waits
    more than half a second for a connection failing (PoolTimeout) as it would after DATABASE_POOL_TIMEOUT."""
    if connection.vendor != "postgresql":
        message = "this test needs the suite on PostgreSQL (DATABASE_URL=postgres://...)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    name = f"web-under-test-{os.getpid()}"
    env = subprocess_env(redis_server.url, DATABASE_POOL_MAX_SIZE=4, DATABASE_POOL_TIMEOUT=0.5)
    env["DATABASE_URL"] += f"?application_name={name}"
    port = free_port()
    args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"]
    server = PortalProcess("web", args, env, tmp_path)
    server.url, server.application_name = f"http://127.0.0.1:{port}", name

    def answers():
        try:
            return http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/health/live") is None
        except OSError:
            return False

    wait_for(answers, timeout=30, what="daphne to listen")
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_clients_share_four_pooled_connections_and_get_no_500(web_with_a_pool_of_four, client,
                                                                                  personas):
    web = web_with_a_pool_of_four
    client.force_login(personas.developer, backend="django.contrib.auth.backends.ModelBackend")
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    address = urlsplit(web.url)
    statuses = Counter()
    lock, done = threading.Lock(), threading.Event()
    seen, most_at_once = set(), [0]

    def browse():
        for i in range(REQUESTS_PER_CLIENT):
            conn = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
            try:
                conn.request("GET", "/" if i % 2 else "/hosts/", headers={"Cookie": cookie})
                status = conn.getresponse().status
            except OSError as exc:
                status = type(exc).__name__
            finally:
                conn.close()
            with lock:
                statuses[status] += 1

    def watch():
        while not done.is_set():
            now = backends_of(web.application_name)
            seen.update(now)
            most_at_once[0] = max(most_at_once[0], len(now))
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    clients = [threading.Thread(target=browse) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    done.set()
    watcher.join()
    connection.close()

    assert statuses == {200: CLIENTS * REQUESTS_PER_CLIENT}, f"{statuses}\n{web.output()[-3000:]}"
    # 300 requests, yet web never held more than its pool, and opened no connection beyond it.
    assert 1 <= most_at_once[0] <= 4
    assert len(seen) <= 4, f"web opened {len(seen)} connections"
