"""A bound on how many HTTP requests one web process works on at once (settings.WEB_CONCURRENT_REQUESTS).

Django runs each ASGI request's view in a thread of its own, and each such thread borrows a database connection from
the pool. Past the pool's size, threads wait for a connection and fail with PoolTimeout when the wait is longer than
DATABASE_POOL_TIMEOUT: a burst of slow pages turns into 500s. Here the requests past the bound wait in the event loop
instead, where waiting costs nothing, and every request that starts finds a connection. The liveness probe is never
made to wait: a busy process is still alive.
"""

import asyncio

UNCOUNTED_PATHS = frozenset({"/health/live"})


class ConcurrencyLimit:
    def __init__(self, app, limit):
        self.app = app
        self.limit = limit
        self._slots = None  # made on first use, inside the server's event loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in UNCOUNTED_PATHS:
            return await self.app(scope, receive, send)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            return await self.app(scope, receive, send)
