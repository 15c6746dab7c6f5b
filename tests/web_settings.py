"""The settings of the web processes the tests share (portal_server, tests/plugins/processes.py): the portal's own,
with the suite's quick password hasher listed first, as the test process has it. Without it every sign-in in a browser
test upgraded the persona's quick hash to the production hasher's million rounds (some 0.4 s of the server's CPU), and
the persona's next sign-in in the test checked that."""

from django.conf import global_settings

from portal import settings as portal_settings
from portal.settings import *  # noqa: F403 - the portal's settings, all of them

PASSWORD_HASHERS = ["tests.hashers.QuickPasswordHasher",
                    *getattr(portal_settings, "PASSWORD_HASHERS", global_settings.PASSWORD_HASHERS)]
