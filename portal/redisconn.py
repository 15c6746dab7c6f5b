"""The portal's own Redis clients (health checks, worker heartbeats, rate limits), made from REDIS_URL in one place.

Celery and channels-redis make their own connections from the same URL (settings.py, spelled for each by
portal/environment.py); everything else asks here, so a password or TLS in the URL applies to every client alike.
"""

import functools
from urllib.parse import urlsplit

import redis
import redis.asyncio
from django.conf import settings

from portal.environment import redis_tls_options

TIMEOUT_SECONDS = 2.0


@functools.lru_cache(maxsize=8)
def _client_for(url, ca_file, timeout):
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30,
                                **redis_tls_options(url, ca_file))


def client(*, timeout=TIMEOUT_SECONDS):
    """A client with short timeouts and a connection pool shared by the process (one per URL): the password and TLS
    come from REDIS_URL (rediss://) and REDIS_CA_FILE, as for Celery and channels-redis."""
    return _client_for(settings.REDIS_URL, settings.REDIS_CA_FILE, timeout)


def async_client(*, timeout=TIMEOUT_SECONDS, max_connections=32):
    """An asyncio client from the same settings, for code that answers in the web process's event loop (the hosts'
    report endpoint). Its connections belong to the loop that first uses them: make one per event loop. At most
    `max_connections` are open; past them a call waits for a free one (up to `timeout`), so a surge of requests
    queues on a few connections instead of opening one each."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=min(timeout, TIMEOUT_SECONDS), **redis_tls_options(settings.REDIS_URL,
                                                                                   settings.REDIS_CA_FILE))
    return redis.asyncio.Redis(connection_pool=pool)


def display_url(url):
    """The URL with its password hidden, for banners and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
