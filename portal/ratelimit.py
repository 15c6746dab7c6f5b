"""Rate limits for machine-facing endpoints (the JSON API, webhooks), counted in Redis so every web process shares them.

A limit is a rate such as "120/m": at most 120 requests in each minute, counted per identity (a client address, a
token, a webhook) in fixed windows. A request over the limit gets HTTP 429 with `Retry-After`: the seconds until its
window ends. Fixed windows are simple and exact to explain; they let a client send up to twice the rate across the
boundary of two windows, which these limits allow for.

If Redis cannot be reached, requests are let through (and logged): a rate limit protects the portal, it is not a
reason to refuse work while the broker restarts.

    @rate_limited("api", per_address="API_RATE_LIMIT_PER_ADDRESS", per_key="API_RATE_LIMIT_PER_TOKEN", key=token_of)
    def view(request): ...
"""

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from functools import wraps

import redis
from django.conf import settings
from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse

from . import redisconn
from .clientip import throttle_address

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    def __str__(self):
        for unit, name in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
            if self.seconds == unit:
                return f"{self.count} per {name}"
        return f"{self.count} per {self.seconds} seconds"


def parse_rate(text):
    """"120/m" -> Rate(120, 60); also "10/s", "1000/h", "5000/d" and "30/5m". Raises ImproperlyConfigured otherwise."""
    match = _RATE.match(text or "")
    if not match:
        raise ImproperlyConfigured(f"{text!r} is not a rate: write COUNT/UNIT, e.g. 120/m (units s, m, h, d).")
    count, multiple, unit = match.groups()
    return Rate(int(count), int(multiple or 1) * _UNITS[unit])


def _redis():
    return redisconn.client(timeout=1)


def hit(scope, identity, rate, *, now=None):
    """Count one request of `identity` in `scope`. Returns 0 when it is within `rate`, else the seconds to wait."""
    now = time.time() if now is None else now
    window = int(now // rate.seconds)
    key = f"{settings.RATE_LIMIT_KEY_PREFIX}:{scope}:{identity}:{window}"
    try:
        pipe = _redis().pipeline()
        pipe.incr(key)
        pipe.expire(key, rate.seconds + 1)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("rate limit %s not checked, Redis did not answer: %s", scope, exc)
        return 0
    if count <= rate.count:
        return 0
    return max(1, math.ceil((window + 1) * rate.seconds - now))


def too_many_requests(retry_after, message):
    response = JsonResponse({"error": f"{message} Retry in {retry_after} s.", "retry_after": retry_after}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def rate_limited(scope, *, per_address, per_key=None, key=None, key_name="token"):
    """A view decorator: limit requests per client address, and per `key(request, *args, **kwargs)` (a token, a webhook:
    `key_name` says which, for the message) when it returns one. `per_address` and `per_key` name settings that hold
    rates, read at each request."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            checks = [("address", throttle_address(request) or "unknown", per_address, "from one address")]
            identity = key(request, *args, **kwargs) if key is not None else None
            if identity:
                checks.append(("key", identity, per_key, f"per {key_name}"))
            for kind, value, setting, who in checks:
                rate = parse_rate(getattr(settings, setting))
                wait = hit(f"{scope}:{kind}", value, rate)
                if wait:
                    return too_many_requests(wait, f"Too many requests: at most {rate} {who}.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def digest(secret):
    """A stable identity for a secret (a token), so that the secret itself never lands in Redis."""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def check_rates(app_configs=None, **kwargs):
    """A system check: every `*_RATE_LIMIT_*` setting is a rate, so a typo stops `manage.py check`, not a request."""
    errors = []
    for name in sorted(set(dir(settings))):
        if "_RATE_LIMIT_PER_" in name:
            try:
                parse_rate(getattr(settings, name))
            except ImproperlyConfigured as exc:
                errors.append(Error(f"{name}: {exc}", id="portal.E001"))
    return errors
