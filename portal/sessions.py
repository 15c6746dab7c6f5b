"""How long a signed-in session lives, and when it ends early.

- **Idle expiry**: a session with no activity for SESSION_IDLE_MINUTES is signed out at its next request (and its open
  log websockets are closed at their next access check). Activity is any request a person makes; htmx's background
  GETs (polling fragments) are not, so a tab left open does not keep a session alive. The time of the last activity is
  written to the session at most once a minute.
- **Absolute expiry**: SESSION_COOKIE_AGE after sign-in, whatever the activity (Django's own).
- **Password changes sign out everywhere else**: Django stores a hash derived from the password in each session and
  ends any session whose hash no longer matches; the session that changed the password is updated and stays. The log
  websocket checks the same hash, so an open socket of another session closes too.
"""

import time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import HASH_SESSION_KEY, logout
from django.utils.crypto import constant_time_compare

LAST_ACTIVITY_KEY = "portal_last_activity"
_WRITE_EVERY_SECONDS = 60


def is_idle(session, now=None):
    """Whether the session has seen no activity for SESSION_IDLE_MINUTES."""
    last = session.get(LAST_ACTIVITY_KEY)
    now = time.time() if now is None else now
    return isinstance(last, (int, float)) and now - last > settings.SESSION_IDLE_MINUTES * 60


def matches_password(session, user):
    """Whether the session was signed in under the user's current password (False after a change elsewhere)."""
    stored = session.get(HASH_SESSION_KEY)
    return bool(stored) and constant_time_compare(stored, user.get_session_auth_hash())


def _is_activity(request):
    return not (request.method == "GET" and request.headers.get("HX-Request") == "true")


class IdleSessionMiddleware:
    """Signs out a session that was idle for SESSION_IDLE_MINUTES; records activity (see the module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated:
            now = time.time()
            if is_idle(request.session, now):
                logout(request)
                messages.info(request, f"You were signed out after {settings.SESSION_IDLE_MINUTES} minutes without "
                                       "activity. Sign in again to go on.")
            elif _is_activity(request):
                last = request.session.get(LAST_ACTIVITY_KEY)
                if not isinstance(last, (int, float)) or now - last >= _WRITE_EVERY_SECONDS:
                    request.session[LAST_ACTIVITY_KEY] = int(now)
        return self.get_response(request)
