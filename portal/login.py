"""Login throttling: two counters, one per client address and one per username, each with its own limit.

django-axes records every failed login (username, address, user agent). Its stock handler locks the pair of them
together, which lets one address try one password against every username. This handler keeps the two counters apart:

- **per address**: `LOGIN_FAILURES_PER_ADDRESS` failures from one address, whatever the usernames, lock that address
  out (password spraying). The address is `portal.clientip.client_ip`, so behind a trusted proxy it is the real client.
- **per user**: `LOGIN_FAILURES_PER_USER` failures for one username, from any number of addresses, lock that username
  out (a distributed guess at one account).

A per-user lock is also a way to keep someone out. So it does not apply in a browser that has signed in as that user
before: a successful login leaves a signed "known browser" cookie naming the user, and from that browser only the
address counter counts. An attacker can make an account refuse new browsers for `AXES_COOLOFF_MINUTES`, but not lock
its owner out of their own.

A successful login clears the failures recorded for that username, never those of the address: otherwise anyone with
an account of their own could spray, sign in as themselves, and spray again.
"""

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.core import signing
from django.db.models import Sum
from django.shortcuts import render

KNOWN_BROWSER_COOKIE = "portal_known"
_KNOWN_BROWSER_SALT = "portal.login.known-browser"
_KNOWN_BROWSER_MAX_USERS = 5


class LoginThrottle(AxesDatabaseHandler):
    """django-axes' database handler with separate address and username counters (see the module docstring)."""

    def locks(self, request, credentials=None):
        """Which counters are at their limit for this attempt: a subset of ("address", "user")."""
        threshold = get_cool_off_threshold(request)
        recent = AccessAttempt.objects.filter(attempt_time__gte=threshold)
        found = []
        address = getattr(request, "axes_ip_address", None)
        if address and _failures(recent.filter(ip_address=address)) >= settings.LOGIN_FAILURES_PER_ADDRESS:
            found.append("address")
        username = get_client_username(request, credentials)
        if (username and not is_known_browser(request, username)
                and _failures(recent.filter(username=username)) >= settings.LOGIN_FAILURES_PER_USER):
            found.append("user")
        return found

    def is_locked(self, request, credentials=None):
        return bool(self.locks(request, credentials))

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        # The stock handler records the failure; with AXES_LOCK_OUT_AT_FAILURE off it never locks, and this decides.
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or getattr(request, "axes_locked_out", False) or self.is_whitelisted(request, credentials):
            return
        if self.is_locked(request, credentials):
            request.axes_locked_out = True
            request.axes_credentials = credentials
            user_locked_out.send("axes", request=request, username=get_client_username(request, credentials),
                                 ip_address=request.axes_ip_address)

    def reset_user_attempts(self, request, credentials=None):
        username = get_client_username(request, credentials)
        if not username:
            return 0
        count, _ = AccessAttempt.objects.filter(username=username).delete()
        return count


def _failures(attempts):
    return attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked-out login gets (HTTP 429), saying which lock applies and for how long."""
    locks = AxesProxyHandler.get_implementation().locks(request, credentials)
    context = {
        "address_locked": "address" in locks,
        "user_locked": "user" in locks or not locks,
        "minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
        "per_address": settings.LOGIN_FAILURES_PER_ADDRESS,
        "per_user": settings.LOGIN_FAILURES_PER_USER,
    }
    return render(request, "registration/locked_out.html", context, status=429)


# --- Known browsers --------------------------------------------------------------------------------------------------


def _known_usernames(request):
    value = request.COOKIES.get(KNOWN_BROWSER_COOKIE)
    if not value:
        return []
    try:
        names = signing.loads(value, salt=_KNOWN_BROWSER_SALT, max_age=settings.LOGIN_KNOWN_BROWSER_DAYS * 86400)
    except signing.BadSignature:
        return []
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def is_known_browser(request, username):
    """Whether this browser signed in as `username` within LOGIN_KNOWN_BROWSER_DAYS (a cookie only the portal can sign)."""
    return username in _known_usernames(request)


def remember_browser(request, response, username):
    """Mark the browser as one `username` signed in from (the most recent few users of a shared browser are kept)."""
    names = [username] + [name for name in _known_usernames(request) if name != username]
    value = signing.dumps(names[:_KNOWN_BROWSER_MAX_USERS], salt=_KNOWN_BROWSER_SALT)
    response.set_cookie(
        KNOWN_BROWSER_COOKIE, value, max_age=settings.LOGIN_KNOWN_BROWSER_DAYS * 86400, httponly=True,
        secure=settings.SESSION_COOKIE_SECURE, samesite="Lax",
    )
    return response
