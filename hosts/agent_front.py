"""The report endpoint's front: `POST /agent/v1/status` with an unchanged status, answered in the web process's event
loop from Redis, before Django's request cycle (registered with `portal.registry.http_front`).

10,000 hosts reporting once a minute are 167 reports a second, most of them unchanged. Through Django each cost about
4 ms of CPU (the request cycle, a thread hop, a pooled connection, one SELECT, two Redis calls); here it is one Redis
round trip (`agentcache.HIT_SCRIPT`: the credential's host, its last status hash, the per-host rate, the seen mark)
and no database. Everything else goes to Django untouched, with the body it read handed on: the other agent
endpoints, a credential the front does not know, a status that changed, a body over HOSTS_MAX_STATUS_BYTES or of
unknown length, a host whose entry was dropped (offline, deleted), and every report while Redis does not answer.

The rules are the full path's: the credential is all that names the host (a credential that is not cached goes to
Django, which answers 401 or 403 as it does today), the per-host rate counts the same key (`portal.ratelimit`), and
the answer is the same JSON (`state` is the host's state at its last changed report).
"""

import asyncio
import hashlib
import json
import logging
import math
import time

import redis
from django.conf import settings
from django.db import connections

from portal import ratelimit, redisconn

from . import agentcache, reportin

log = logging.getLogger(__name__)

PATH = "/agent/v1/status"


class AgentFront:
    def __init__(self, app):
        self.app = app
        self._redis = {}  # per event loop: an asyncio client's connections belong to the loop that made them
        self._scripts = {}
        self._flushing = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        secret = _bearer(headers.get(b"authorization", b""))
        try:
            length = int(headers.get(b"content-length", b""))
        except ValueError:
            length = -1
        if not secret.startswith(reportin.HOST_SECRET_PREFIX) or not 0 < length <= settings.HOSTS_MAX_STATUS_BYTES:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        answer = await self._answer(secret, body) if len(body) <= settings.HOSTS_MAX_STATUS_BYTES else None
        if answer is None:
            return await self.app(scope, _replay(body, receive), send)
        status, payload, extra = answer
        content = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
            (b"x-content-type-options", b"nosniff"), *extra]})
        await send({"type": "http.response.body", "body": content})

    async def _answer(self, secret, body):
        """(status, JSON, extra headers) when Redis can answer for the report, else None (Django reads it)."""
        rate = ratelimit.parse_rate(settings.HOSTS_AGENT_RATE_LIMIT_PER_HOST)
        now = time.time()
        window = int(now // rate.seconds)
        try:
            client, script = self._client()
            result = await script(
                keys=[agentcache.CREDENTIAL_PREFIX + reportin.secret_hash(secret), agentcache.SEEN_KEY,
                      agentcache.FLUSH_LOCK_KEY, agentcache.ACTIONS_KEY],
                args=[hashlib.sha256(body).hexdigest(), repr(now), agentcache.HOST_PREFIX,
                      f"{settings.RATE_LIMIT_KEY_PREFIX}:agent:host:", window, rate.count, rate.seconds,
                      int(settings.HOSTS_AGENT_SEEN_FLUSH_SECONDS * 1000)])
        except (redis.RedisError, OSError) as exc:
            log.warning("report handed to the full path, Redis did not answer: %s", exc)
            return None
        if result[0] == 0:
            return None
        if result[0] == 2:
            wait = max(1, math.ceil((window + 1) * rate.seconds - now))
            return 429, {"error": f"Too many requests: at most {rate} per host. Retry in {wait} s.",
                         "retry_after": wait}, [(b"retry-after", str(wait).encode())]
        _, _, state, actions, flush_due = result
        if flush_due:
            self._flush()
        return 200, {"status": "unchanged", "state": state.decode(), "actions": int(actions)}, []

    def _client(self):
        loop = asyncio.get_running_loop()
        if loop not in self._redis:
            # A generous timeout: when the process is overloaded its loop answers late, and handing the report to
            # Django then would cost five times the work at the worst moment. A Redis that is down refuses at once.
            client = redisconn.async_client(timeout=10)
            self._redis[loop] = client
            self._scripts[loop] = client.register_script(agentcache.HIT_SCRIPT)
        return self._redis[loop], self._scripts[loop]

    def _flush(self):
        """Write the seen marks (one UPDATE, in a thread: the ORM is synchronous), unless a flush still runs."""
        if self._flushing is not None and not self._flushing.done():
            return
        self._flushing = asyncio.get_running_loop().run_in_executor(None, _flush_in_thread)


def _flush_in_thread():
    try:
        reportin.flush_last_seen()
    except Exception:
        log.exception("the seen marks were not written; beat's flush retries")
    finally:
        connections.close_all()  # this thread's connection goes back to the pool


def _bearer(value):
    scheme, _, secret = value.decode("latin-1").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def _replay(body, receive):
    """`receive` for the app behind the front: the body the front read, then the connection's own messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay
