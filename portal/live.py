"""Publishing to Channels groups from synchronous code (Celery workers, services), in order and without blocking.

`async_to_sync(layer.group_send)` would start an event loop, and with it a fresh Redis connection pool, on every call. A
log sink publishes up to a hundred batches a second, so instead one daemon thread per process keeps a loop and a queue,
and sends messages one after another in the order they were published. Publishing is best effort: the database is the
source of truth, and viewers fill any gap from it.
"""

import asyncio
import logging
import os
import threading

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

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
        while True:
            group, message, done = await self.queue.get()
            if group is not None:
                try:
                    await layer.group_send(group, message)
                except Exception as exc:  # noqa: BLE001 - a lost message is recovered from the database
                    log.warning("could not publish to %s: %s", group, exc)
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
