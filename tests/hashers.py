"""The suite's password hasher, in a module of its own so that the portal processes tests start can list it too
(tests/web_settings.py) without importing pytest."""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class QuickPasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 with 1,000 rounds instead of a million: a password check costs well under a millisecond instead
    of about 0.3 s of CPU (over a second when the machine is busy), and the suite checks passwords hundreds of times
    (every sign-in, every failed guess in the lockout tests). Its hashes are ordinary `pbkdf2_sha256$1000$...` strings.
    Listed first, before the production hasher, it is the one new hashes are made with, while a hash is still checked
    by the hasher its algorithm names; and a quick hash is never upgraded on sign-in."""

    iterations = 1000
