"""What the health endpoints check: the database, Redis (channel layer), the broker and the workers' heartbeats.

Readiness (may this web process take requests?) is the database, Redis and the broker. Workers are reported but never
make web unready: web serves pages without them, and a worker that is gone is an operator's problem, not the proxy's.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from . import workers
from .celery import app
from .redisconn import client


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str

    def as_dict(self):
        return {"ok": self.ok, "detail": self.detail}


def _failure(exc):
    return Check(False, f"{type(exc).__name__}: {exc}"[:300])


def database():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - a health check reports any failure
        return _failure(exc)
    return Check(True, connection.vendor)


def redis():
    try:
        client().ping()
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)
    return Check(True, "PONG")


def broker():
    """Celery's own connection, so its URL and transport options (password, TLS) are what is checked. A connection
    that fails is tried once more, HEALTH_BROKER_RETRY_SECONDS later."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=settings.HEALTH_BROKER_RETRY_SECONDS, timeout=2)
            conn.default_channel.client.ping()
    except Exception as exc:  # noqa: BLE001
        return _failure(exc)
    return Check(True, conn.as_uri())


def worker_state():
    """Check plus the live workers (name, queues, concurrency), from their heartbeats."""
    try:
        live = workers.alive()
    except Exception as exc:  # noqa: BLE001
        return _failure(exc), []
    if not live:
        return Check(False, f"no worker heartbeat in the last {workers.expires_after():.0f} s"), []
    queues = sorted({queue for worker in live for queue in worker.queues})
    return Check(True, f"{len(live)} worker(s) on {', '.join(queues)}"), live


def readiness():
    return {"database": database(), "redis": redis(), "broker": broker()}
