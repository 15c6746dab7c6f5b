"""A web process works on at most WEB_CONCURRENT_REQUESTS requests at once; the rest wait in the event loop. The
liveness probe and websockets are never held back. (Against a real daphne and pool: tests/portal/test_connections.py.)"""

import asyncio

from portal.concurrency import ConcurrencyLimit


class SlowApp:
    """An ASGI app that holds each request until released, counting how many it holds at once."""

    def __init__(self):
        self.now = self.most = 0
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send):
        self.now += 1
        self.most = max(self.most, self.now)
        await self.release.wait()
        self.now -= 1


async def test_requests_past_the_limit_wait_their_turn_and_all_are_served():
    inner = SlowApp()
    app = ConcurrencyLimit(inner, 3)
    calls = [asyncio.create_task(app({"type": "http", "path": "/hosts/"}, None, None)) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert inner.now == 3
    inner.release.set()
    await asyncio.gather(*calls)
    assert inner.most == 3 and inner.now == 0


async def test_the_liveness_probe_and_websockets_pass_a_full_process():
    inner = SlowApp()
    app = ConcurrencyLimit(inner, 1)
    held = asyncio.create_task(app({"type": "http", "path": "/"}, None, None))
    probe = asyncio.create_task(app({"type": "http", "path": "/health/live"}, None, None))
    socket = asyncio.create_task(app({"type": "websocket", "path": "/ws/runs/1/"}, None, None))
    await asyncio.sleep(0.05)
    assert inner.now == 3
    inner.release.set()
    await asyncio.gather(held, probe, socket)
