"""The health endpoints.

- `/health/live`: the process answers (nothing else is checked).
- `/health/ready`: the database, Redis and the broker answer; a missing worker does not make web unready.
- `/health/`: all of that plus the workers' heartbeats.
Anonymous callers learn only ok or not ok; staff and a monitor holding HEALTH_TOKEN get the details. Worker state comes
from heartbeats the workers write to Redis, never from a broadcast ping per request.
"""

import signal

import pytest

from portal import workers
from tests.helpers import wait_for
from tests.plugins.personas import make_user
from tests.plugins.redis_server import broker_stopped

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client_for):
    return client_for(make_user("ops", superuser=True))


def test_a_live_worker_makes_health_ok_staff_see_its_queues_and_it_is_forgotten_when_it_stops(client, staff,
                                                                                              start_worker):
    # One worker for what its heartbeat tells each reader (starting one costs some 3 s of CPU): anonymous callers, staff,
    # and the consumers of a queue; then it stops.
    worker = start_worker(queues="hosts,builds,default", concurrency=3)
    wait_for(lambda: client.get("/health/").status_code == 200, what="the worker's heartbeat")
    assert client.get("/health/").json() == {"ok": True}
    assert client.get("/health/ready").json() == {"ok": True}
    assert client.get("/health/live").json() == {"ok": True}

    body = staff.get("/health/").json()
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True, "redis": True, "broker": True, "workers": True}
    assert body["checks"]["workers"]["detail"] == "1 worker(s) on builds, default, hosts"
    [shown] = body["workers"]
    assert shown["name"].startswith("worker-0-") and shown["queues"] == ["builds", "default", "hosts"]
    assert shown["concurrency"] == 3

    [beat] = workers.alive()
    assert beat.queues == ("builds", "default", "hosts") and beat.concurrency == 3
    assert [w.name for w in workers.consumers("builds")] == [beat.name] and workers.consumers("images") == []
    worker.stop(signal.SIGTERM)  # a warm shutdown
    assert workers.alive() == []


def test_a_monitor_with_the_health_token_sees_the_details_and_a_wrong_token_does_not(client, settings):
    settings.HEALTH_TOKEN = "s3cret-health-token"
    with_token = client.get("/health/", headers={"Authorization": "Bearer s3cret-health-token"}).json()
    assert set(with_token["checks"]) == {"database", "redis", "broker", "workers"}
    for presented in ("Bearer wrong", "s3cret-health-token", "Bearer s3cret-health-token-and-more", "Bearer ²é✓"):
        response = client.get("/health/", headers={"Authorization": presented})
        assert response.json() == {"ok": False}, presented  # no worker in this test: not ok, and nothing more


def test_without_a_health_token_only_staff_see_details(client, client_for, personas, settings):
    settings.HEALTH_TOKEN = ""
    assert client.get("/health/", headers={"Authorization": "Bearer "}).json() == {"ok": False}
    assert client_for(personas.admin).get("/health/").json() == {"ok": False}  # a team admin is not staff


def test_a_missing_worker_is_reported_but_web_stays_ready(client, staff):
    response = client.get("/health/")
    assert (response.status_code, response.json()) == (503, {"ok": False})
    assert client.get("/health/ready").status_code == 200
    body = staff.get("/health/").json()
    assert body["checks"]["workers"] == {"ok": False, "detail": "no worker heartbeat in the last 30 s"}
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"] and body["checks"]["broker"]["ok"]
    assert body["workers"] == []


def test_with_redis_down_web_is_unready_and_anonymous_callers_see_no_exception_text(client, staff, redis_server):
    with broker_stopped(redis_server):
        ready = client.get("/health/ready")
        assert (ready.status_code, ready.json()) == (503, {"ok": False})
        assert client.get("/health/live").status_code == 200  # alive: no reason to restart the process
        checks = staff.get("/health/").json()["checks"]
        assert not checks["redis"]["ok"] and not checks["broker"]["ok"] and not checks["workers"]["ok"]
        assert "redis.sock" in checks["redis"]["detail"]  # the reason, for staff
        assert checks["database"]["ok"]
    assert client.get("/health/ready").status_code == 200


def test_probes_answer_any_host_over_plain_http_in_production(client, settings):
    """An orchestrator probes 10.0.0.5:8000 or 127.0.0.1:8000 over HTTP; ALLOWED_HOSTS and the HTTPS redirect would
    refuse both (400, 301). The probes answer; everything else still gets those checks."""
    settings.ALLOWED_HOSTS = ["portal.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    for path in ("/health/live", "/health/ready", "/health/live/", "/health/ready/"):
        response = client.get(path, HTTP_HOST="127.0.0.1:8000")
        assert (response.status_code, response.json()) == (200, {"ok": True}), path
        assert "no-cache" in response["Cache-Control"]
    assert client.get("/login/", HTTP_HOST="127.0.0.1:8000").status_code == 400


def test_a_killed_workers_heartbeat_expires_after_three_missed_beats(start_worker, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 0.5
    worker = start_worker(queues="default", concurrency=1, WORKER_HEARTBEAT_SECONDS="0.5")
    first = wait_for(lambda: workers.alive(), what="the worker's first heartbeat")[0].beat_at
    wait_for(lambda: workers.alive() and workers.alive()[0].beat_at > first, what="a second heartbeat")
    worker.stop(signal.SIGKILL)  # no chance to say goodbye
    wait_for(lambda: workers.alive() == [], timeout=10, what="the heartbeat to expire")
