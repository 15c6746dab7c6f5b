"""A real OpenID Connect provider on loopback (tests/oidc_provider: django-oauth-toolkit in its own process), the
portal's settings pointing at it, and a sign-in through it without a browser (requests plays the browser at the
provider; Django's test client is the browser at the portal)."""

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import ROOT, free_port, wait_for

CLIENT_ID, CLIENT_SECRET = "image-mode-portal", "provider-test-secret-0123456789"
PASSWORD = "provider password 1"


@dataclass
class Provider:
    directory: Path
    port: int
    process: subprocess.Popen | None = None
    users: dict = field(default_factory=dict)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def endpoints(self):
        return {"OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.url}/o/authorize/",
                "OIDC_OP_TOKEN_ENDPOINT": f"{self.url}/o/token/",
                "OIDC_OP_USER_ENDPOINT": f"{self.url}/o/userinfo/",
                "OIDC_OP_JWKS_ENDPOINT": f"{self.url}/o/.well-known/jwks.json",
                "OIDC_RP_CLIENT_ID": CLIENT_ID, "OIDC_RP_CLIENT_SECRET": CLIENT_SECRET}

    def set_user(self, username, *, groups, email=None):
        """Add or change a user of the provider; their groups count from their next sign-in."""
        self.users[username] = {"password": PASSWORD, "email": email or f"{username}@idp.example",
                                "groups": list(groups), "given_name": username.title(), "family_name": "Tester"}
        (self.directory / "users.json").write_text(json.dumps(self.users))

    def start(self, redirect_uris):
        log = open(self.directory / "provider.log", "ab")  # noqa: SIM115 - the process keeps it
        env = {"OIDC_TEST_DIR": str(self.directory), "OIDC_TEST_PORT": str(self.port), "OIDC_TEST_CLIENT_ID": CLIENT_ID,
               "OIDC_TEST_CLIENT_SECRET": CLIENT_SECRET, "OIDC_TEST_REDIRECT_URIS": " ".join(redirect_uris),
               "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "tests.oidc_provider"], cwd=ROOT, env=env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, timeout=60, what="the test identity provider to answer")
        return self

    def _answers(self):
        assert self.process.poll() is None, (self.directory / "provider.log").read_text()[-3000:]
        try:
            return requests.get(self.endpoints()["OIDC_OP_JWKS_ENDPOINT"], timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def make_provider(directory, redirect_uris, port=None):
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (directory / "signing-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    provider = Provider(directory=directory, port=port or free_port())
    provider.set_user("alice", groups=["platform-approvers"])
    return provider.start(redirect_uris)


@pytest.fixture(scope="module")
def provider_process(tmp_path_factory):
    provider = make_provider(tmp_path_factory.mktemp("provider"), ["http://testserver/login/sso/callback/"])
    yield provider
    provider.stop()


@pytest.fixture
def oidc_provider(provider_process, settings):
    """The module's running provider (started again if a test stopped it; alice back in platform-approvers only),
    and the portal's settings pointing at it (in this process, for Django's test client)."""
    provider = provider_process
    if provider.process.poll() is not None:
        provider.start(["http://testserver/login/sso/callback/"])
    provider.users.clear()
    provider.set_user("alice", groups=["platform-approvers"])
    settings.SSO_ENABLED = True
    settings.SSO_PROVIDER_NAME = "Test IdP"
    for name, value in provider.endpoints().items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, "portal.sso.PortalOIDCBackend"]
    settings.OIDC_GROUP_MAPPING = [("platform-approvers", "platform", "approver"),
                                   ("platform-developers", "platform", "developer"),
                                   ("platform-readers", "platform", "viewer")]
    return provider


def sign_in_through(client, provider, username, password=PASSWORD, *, start="/login/sso/"):
    """Press "Sign in with ..." with Django's test client, sign in at the provider's form with requests, and bring
    the browser back to the portal's callback. Returns the portal's answer to the callback."""
    answer = client.get(start)
    assert answer.status_code == 302, answer.content[:300]
    browser = requests.Session()
    page = browser.get(answer["Location"], timeout=10)  # the provider's login form
    assert "provider-sign-in" in page.text, page.text[:500]
    answer = browser.post(page.url, data={"username": username, "password": password,
                                          "csrfmiddlewaretoken": browser.cookies["provider_csrftoken"]},
                          allow_redirects=False, timeout=10)
    location = answer.headers.get("Location", "")
    while location and not location.startswith("http://testserver"):
        answer = browser.get(urljoin(answer.url, location), allow_redirects=False, timeout=10)
        location = answer.headers.get("Location", "")
    assert location.startswith("http://testserver/login/sso/callback/"), (answer.status_code, answer.text[:300])
    return client.get(location.removeprefix("http://testserver"))
