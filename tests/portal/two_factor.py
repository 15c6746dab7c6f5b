"""Second-factor helpers for tests: an authenticator app that really computes TOTP codes, and clients that sign in
through the portal's own two steps."""

import time
from dataclasses import dataclass, field

from django.test import Client
from django_otp.oath import TOTP

from portal import twofactor

PASSWORD = "correct horse battery"


@dataclass
class App:
    """What a phone's authenticator app knows: the secret. `code()` is the code it shows now; `code(ahead=1)` the one
    it shows 30 s later (the portal accepts one step of drift, and never the same step twice)."""

    user: object
    secret: str
    backup_codes: list = field(default_factory=list)

    def code(self, ahead=0):
        totp = TOTP(bytes.fromhex(self.secret))
        totp.time = time.time() + 30 * ahead
        return f"{totp.token():06d}"


def enroll(user):
    """Set up an authenticator app for `user` through the portal's service, as the two-factor page does."""
    secret = twofactor.new_secret()
    app = App(user, secret)
    app.backup_codes = twofactor.two_factor_enroll(user=user, key_hex=secret, token=app.code())
    return app


def sign_in(username, code, password=PASSWORD, client=None):
    """Both steps of signing in; returns the client and the second step's response."""
    client = client or Client()
    first = client.post("/login/", {"username": username, "password": password})
    assert first.status_code == 302 and first["Location"] == "/login/verify/", first
    return client, client.post("/login/verify/", {"code": code})


def verified_client(app):
    """A client signed in as the app's user with a backup code (any code of the app's current step is spent)."""
    client, response = sign_in(app.user.username, app.backup_codes.pop())
    assert response.status_code == 302, response.content.decode()[:2000]
    return client
