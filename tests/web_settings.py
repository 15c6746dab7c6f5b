"""The settings of the web processes the tests share (portal_server, tests/plugins/processes.py): the portal's own,
with the suite's quick password hasher listed first, as the test process has it. Without it every sign-in in a browser
test upgraded the persona's quick hash to the production hasher's million rounds (some 0.4 s of the server's CPU), and
the persona's next sign-in in the test checked that."""

from django.conf import global_settings

from portal import settings as portal_settings
from portal.settings import *  # noqa: F403 - the portal's settings, all of them

PASSWORD_HASHERS = ["tests.hashers.QuickPasswordHasher",
                    *getattr(portal_settings, "PASSWORD_HASHERS", global_settings.PASSWORD_HASHERS)]

# The log viewer's polling fallback asks four times a second instead of every 2 s: the tests that follow a log by
# polling, and those that check polling stopped, wait a few of the page's own intervals (its data-poll-ms).
RUN_LOG_POLL_SECONDS = 0.25

# The health checks try a broker that did not answer again after 0.1 s instead of 2 s: the tests that stop Redis wait
# for that retry on every /health/ request.
HEALTH_BROKER_RETRY_SECONDS = 0.1

# django-otp makes a second factor wait one second after a wrong code (then 2, 4, ...); here a tenth of that, so the
# browser test that types a wrong code and then a backup code waits 0.1 s (tests/portal/test_two_factor.py checks
# the wait itself, in the test process).
OTP_TOTP_THROTTLE_FACTOR = OTP_STATIC_THROTTLE_FACTOR = 0.1

# Static files are served with the max-age WhiteNoise gives them in production (60 s) instead of DEBUG's 0, with which
# every page of a browser test asked again for each of its stylesheets, scripts and font (some ten 304s from daphne a
# page) where a person's browser reuses them (the page sweep's page loads: daphne
# 3.75 -> 2.88 CPU-s, 23.7 -> 21.2 CPU-s in all, on the full Chromium).
WHITENOISE_MAX_AGE = 60
