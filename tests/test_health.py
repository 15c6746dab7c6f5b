"""The health endpoint reports the database, Redis and whether a Celery worker answers."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_health_is_ok_when_database_redis_and_a_worker_answer(client, start_worker):
    start_worker(queues="default", concurrency=1)
    response = client.get("/health/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["ok"] is True
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True, "redis": True, "worker": True}


def test_health_says_which_part_is_down(client):
    response = client.get("/health/")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert body["checks"]["worker"] == {"ok": False, "detail": "no worker answered within 1 s"}


def test_health_reports_redis_down(client, settings):
    settings.REDIS_URL = "unix:///nonexistent/redis.sock"
    body = client.get("/health/").json()
    assert body["checks"]["redis"]["ok"] is False and "nonexistent" in body["checks"]["redis"]["detail"]
