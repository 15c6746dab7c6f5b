"""The portal's own Redis clients (health checks, worker heartbeats), made from REDIS_URL in one place.

Celery and channels-redis make their own connections from the same URL (settings.py); everything else asks here, so
a password or TLS in the URL applies to every client alike.
"""

import functools

import redis
from django.conf import settings

TIMEOUT_SECONDS = 2.0


@functools.lru_cache(maxsize=4)
def _client_for(url):
    return redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS,
                                health_check_interval=30)


def client():
    """A client with short timeouts and a connection pool shared by the process (one per URL)."""
    return _client_for(settings.REDIS_URL)
