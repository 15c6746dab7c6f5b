"""How many run-log websockets each user has open, across every web process: at most RUN_LOG_SOCKETS_PER_USER.

Each open socket holds a lease in a Redis sorted set of its user (member: the socket's id; score: when the lease runs
out). The socket renews its lease while it is open and gives it back when it closes; the lease of a socket whose
process died simply runs out after LEASE_SECONDS. Opening a socket while the user holds the most leases allowed is
refused; the check and the new lease are one Lua script, so two sockets opened at once cannot both squeeze in.

If Redis cannot be reached, sockets are let through (and logged): the cap protects the portal from one user's hundred
tabs or scripts, it is not a reason to stop showing logs while Redis restarts.
"""

import logging
import math
import time

import redis
from django.conf import settings

from .redisconn import client

log = logging.getLogger(__name__)

LEASE_SECONDS = 90
RENEW_SECONDS = 30

# KEYS[1] the user's set; ARGV: now, limit, lease end, socket id. Returns 1 if the socket got a lease, else 0.
_OPEN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _key(user_id):
    return f"{settings.LOG_SOCKETS_KEY_PREFIX}:{user_id}"


def socket_open(user_id, socket_id, *, now=None) -> bool:
    """Take a lease for a new socket of the user. False when the user already holds RUN_LOG_SOCKETS_PER_USER."""
    now = time.time() if now is None else now
    try:
        taken = client().eval(_OPEN, 1, _key(user_id), now, settings.RUN_LOG_SOCKETS_PER_USER, now + LEASE_SECONDS,
                              socket_id, math.ceil(LEASE_SECONDS) + 1)
    except redis.RedisError as exc:
        log.warning("open log sockets of user %s not counted, Redis did not answer: %s", user_id, exc)
        return True
    return bool(taken)


def socket_renew(user_id, socket_id, *, now=None):
    """Keep the socket's lease (only one it still holds: a lease that ran out is not taken again here)."""
    sockets_renew([(user_id, socket_id)], now=now)


def sockets_renew(leases, *, now=None):
    """socket_renew for many (user id, socket id) pairs in one round trip: what a web process's run hub does."""
    if not leases:
        return
    now = time.time() if now is None else now
    try:
        pipe = client().pipeline(transaction=False)
        for user_id, socket_id in leases:
            pipe.zadd(_key(user_id), {socket_id: now + LEASE_SECONDS}, xx=True)
        for user_id in {user_id for user_id, _ in leases}:
            pipe.expire(_key(user_id), math.ceil(LEASE_SECONDS) + 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("leases of %s log sockets not renewed, Redis did not answer: %s", len(leases), exc)


def socket_close(user_id, socket_id):
    try:
        client().zrem(_key(user_id), socket_id)
    except redis.RedisError as exc:
        log.warning("lease of log socket %s not given back (it runs out by itself): %s", socket_id, exc)
