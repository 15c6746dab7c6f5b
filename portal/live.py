"""Publishing to Channels groups from synchronous code (Celery workers, services), in order and without blocking.

`async_to_sync(layer.group_send)` would start an event loop, and with it a fresh Redis connection pool, on every call. A
log sink publishes up to a hundred batches a second, so instead one daemon thread per process keeps a loop and a queue,
and sends messages one after another in the order they were published. Publishing is best effort: the database is the
source of truth, and viewers fill any gap from it.

`RedisChannelLayer` is channels-redis's layer made to ride out a Redis restart: a consumer waiting for messages retries
instead of dying with a connection error (its socket stays open; `portal.loghub` renews group memberships and fills
what was lost from the database).
"""

import asyncio
import logging
import os
import threading

from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 0.5
_LOST = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class RedisChannelLayer(_RedisChannelLayer):
    """channels-redis's layer, except that receive() waits for Redis to come back instead of raising."""

    async def receive(self, channel):
        warned = False
        while True:
            try:
                return await super().receive(channel)
            except _LOST as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # redis-py turns a cancelled read into a timeout: a cancellation is not an outage
                if not warned:
                    log.warning("channel layer: Redis unreachable (%s); retrying every %ss", exc, RECONNECT_SECONDS)
                    warned = True
                await asyncio.sleep(RECONNECT_SECONDS)

_lock = threading.Lock()
_publisher = None


class _Publisher:
    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.queue = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="channels-publisher", daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _main(self):
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.ready.set()
        self.loop.run_until_complete(self._drain_forever())

    async def _drain_forever(self):
        layer = get_channel_layer()
        failing = False
        while True:
            group, message, done = await self.queue.get()
            if group is not None:
                try:
                    await layer.group_send(group, message)
                    if failing:
                        log.warning("publishing to the channel layer works again")
                        failing = False
                except Exception as exc:  # noqa: BLE001 - a lost message is recovered from the database
                    if not failing:  # once per outage, not once per batch
                        log.warning("could not publish to %s: %s (viewers read the database meanwhile)", group, exc)
                        failing = True
            if done is not None:
                done.set()

    def put(self, group, message, done=None):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (group, message, done))


def _get_publisher():
    global _publisher
    with _lock:
        if _publisher is None or _publisher.pid != os.getpid() or not _publisher.thread.is_alive():
            _publisher = _Publisher()
        return _publisher


def publish(group, message):
    """Queue `message` (a dict with a "type") for `group`; returns at once."""
    _get_publisher().put(group, message)


def wait_published(timeout=5.0):
    """Block until everything published so far from this process has been handed to the channel layer."""
    done = threading.Event()
    _get_publisher().put(None, None, done)
    return done.wait(timeout)
