"""What the report endpoint's front (`hosts/agent_front.py`) knows in Redis, so that an unchanged status costs one Redis
round trip and no database.

Keys (all under `hosts:agent:`):
- `cred:<sha256 of the credential>` -> the host's id;
- `host:<id>` -> {status: the sha256 of the status it sent last, state: its state then}, present only while a report
  with that hash would change nothing (the host is approved, reachable and readable);
- `actions`: the ids of hosts an action waits for (so the answer's `actions` is current without a query);
- `seen` (`reportin.SEEN_KEY`): host id -> when it last reported, written to PostgreSQL in one UPDATE a second.

The full path (Django, `hosts.agent_api.status`) writes `cred:` and `host:` after every report it reads
(`reportin.host_report`); anything that makes a host's next report worth reading again deletes `host:<id>` (`forget`):
offline detection, deletion, and the seen-marks' flush for hosts whose row says they are not current. The entries also
expire after HOSTS_AGENT_CACHE_SECONDS, so a missed delete (a team deleted with its hosts) heals by itself.

If Redis does not answer, the front hands every report to the full path, which works without Redis.
"""

import logging
import random

import redis
from django.conf import settings

from portal import redisconn

log = logging.getLogger(__name__)

PREFIX = "hosts:agent:"
CREDENTIAL_PREFIX = PREFIX + "cred:"
HOST_PREFIX = PREFIX + "host:"
ACTIONS_KEY = PREFIX + "actions"
SEEN_KEY = PREFIX + "seen"
FLUSH_LOCK_KEY = PREFIX + "seen:flush"

# An unchanged report, in one round trip. KEYS: the credential's key, the seen marks, the flush lock, the hosts with
# actions waiting. ARGV: the status hash, now, the prefix of host keys, the prefix of rate keys, the rate's window
# number, its count, its seconds, the flush interval in ms. Returns {0} to hand the report to the full path (unknown
# credential, nothing current cached, or a different status), {2, id} when the host is over its rate, else
# {1, id, state, action waiting 0|1, flush due 0|1}. The host and rate keys are named from the id read here: one
# Redis server (or one slot), as the portal uses.
HIT_SCRIPT = """
local id = redis.call('GET', KEYS[1])
if not id then return {0} end
local entry = redis.call('HMGET', ARGV[3] .. id, 'status', 'state')
if not entry[1] or entry[1] ~= ARGV[1] then return {0} end
local rate_key = ARGV[4] .. id .. ':' .. ARGV[5]
local count = redis.call('INCR', rate_key)
if count == 1 then redis.call('EXPIRE', rate_key, tonumber(ARGV[7]) + 1) end
if count > tonumber(ARGV[6]) then return {2, id} end
redis.call('HSET', KEYS[2], id, ARGV[2])
local due = redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[8])
return {1, id, entry[2], redis.call('SISMEMBER', KEYS[4], id), due and 1 or 0}
"""


def _ttl():
    seconds = getattr(settings, "HOSTS_AGENT_CACHE_SECONDS", 3600)
    return max(1, int(seconds * random.uniform(0.9, 1.1)))  # nosec B311 - spreads expiries, not a secret


def _client():
    return redisconn.client(timeout=1)


def remember(*, host_id, credential_hash, status_hash, state, actions_waiting):
    """The host's report with `status_hash` would change nothing: its next such report may be answered by the
    front."""
    ttl = _ttl()
    try:
        pipe = _client().pipeline(transaction=False)
        pipe.set(CREDENTIAL_PREFIX + credential_hash, str(host_id), ex=ttl)
        pipe.hset(HOST_PREFIX + str(host_id), mapping={"status": status_hash, "state": state})
        pipe.expire(HOST_PREFIX + str(host_id), ttl)
        (pipe.sadd if actions_waiting else pipe.srem)(ACTIONS_KEY, str(host_id))
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("host %s not cached for the report front, Redis did not answer: %s", host_id, exc)


def forget(host_ids):
    """The next report of these hosts goes through the full path (read, compared with the row, recorded)."""
    host_ids = [str(pk) for pk in host_ids]
    if not host_ids:
        return
    try:
        _client().delete(*(HOST_PREFIX + pk for pk in host_ids))
    except redis.RedisError as exc:
        # The entries expire on their own (HOSTS_AGENT_CACHE_SECONDS); until then the front answers from them.
        log.warning("report front entries of %s hosts not dropped, Redis did not answer: %s", len(host_ids), exc)


def action_waits(host_id, waiting=True):
    """Whether an action waits for the host: the answer to its next report says so, from the front too."""
    try:
        client = _client()
        (client.sadd if waiting else client.srem)(ACTIONS_KEY, str(host_id))
    except redis.RedisError as exc:
        # The host's entry is dropped when Redis is back (its TTL at the latest); the full path reads the database.
        log.warning("action flag of host %s not written, Redis did not answer: %s", host_id, exc)
