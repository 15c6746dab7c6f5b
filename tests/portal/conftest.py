"""Fixtures of the core's tests only: a private git server over smart HTTP (tests/builds/git_server.py), for the egress
and secrets tests; the loopback OpenID Connect provider of the single sign-on tests (tests/portal/sso_fixtures.py); a
channel layer of each test's own and the personas for the run log websocket's tests (tests/portal/test_consumer*.py,
test_socket_tokens.py)."""

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


@pytest.fixture
def a_channel_layer_of_the_tests_own():
    """channels-redis keeps its receive machinery per layer object and event loop, and every async test runs in an
    event loop of its own: each test gets a fresh layer, as each daphne process has one layer on one loop (a layer
    left with a receive of an earlier test's closed loop lost a batch once, under load)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def async_personas(personas):
    return personas
