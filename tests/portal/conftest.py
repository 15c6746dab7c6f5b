"""Fixtures of the core's tests only: a private git server over smart HTTP (tests/builds/git_server.py), for the egress
and secrets tests; the loopback OpenID Connect provider of the single sign-on tests (tests/portal/sso_fixtures.py)."""

import tempfile

import pytest

from tests.builds.git_server import GitHTTPServer
from tests.helpers import allow_egress
from tests.portal.sso_fixtures import oidc_provider, provider_process  # noqa: F401 - fixtures of test_sso.py


@pytest.fixture
def git_server(settings):
    """start(username, token) -> a GitHTTPServer that wants that login."""
    started = []

    def start(*, username="ci", token):
        server = GitHTTPServer(tempfile.mkdtemp(prefix="portal-git-http-"), username=username, token=token)
        started.append((server, allow_egress(server.host)))
        return server

    settings.BUILD_GIT_URL_SCHEMES = [*settings.BUILD_GIT_URL_SCHEMES, "http"]
    yield start
    for server, disallow in started:
        server.stop()
        disallow()
