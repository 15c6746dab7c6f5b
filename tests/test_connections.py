"""Database connections under ASGI: none is kept between requests unless CONN_MAX_AGE says so.

Django keeps a persistent connection per thread, and under ASGI every request's view runs in a thread of its own, so
with CONN_MAX_AGE above 0 the connections pile up until PostgreSQL refuses new clients ("too many clients already").
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

from tests.conftest import IN_CI, ROOT, make_user, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 50
REQUESTS_PER_CLIENT = 6


def conn_max_age(**env):
    """CONN_MAX_AGE as the portal's settings read it from this environment."""
    code = "from django.conf import settings as s; print(s.DATABASES['default']['CONN_MAX_AGE'])"
    base = {k: v for k, v in os.environ.items() if k != "CONN_MAX_AGE"}
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, text=True,
                            capture_output=True, env={**base, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
                            check=True)
    return result.stdout.strip()


def test_no_connection_is_kept_between_requests_unless_conn_max_age_is_set():
    postgres = "postgres://portal@127.0.0.1:5432/portal"
    assert conn_max_age(DATABASE_URL=postgres) == "0"
    assert conn_max_age(DATABASE_URL=postgres, CONN_MAX_AGE="30") == "30"


def backends():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


@pytest.mark.slow
def test_fifty_concurrent_clients_on_one_daphne_on_postgresql_get_no_500(portal_server, client):
    if connection.vendor != "postgresql":
        message = "this test needs the suite on PostgreSQL (DATABASE_URL=postgres://...)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    client.force_login(make_user("developer"), backend="django.contrib.auth.backends.ModelBackend")
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    address = urlsplit(portal_server.url)
    idle = backends()
    statuses = Counter()
    lock = threading.Lock()

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

    clients = [threading.Thread(target=browse) for _ in range(CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()

    assert statuses == {200: CLIENTS * REQUESTS_PER_CLIENT}, f"{statuses}\n{portal_server.output()[-3000:]}"
    # Every connection the requests opened is closed again: web holds none while idle.
    wait_for(lambda: backends() <= idle, timeout=10, what="web's connections to close")
