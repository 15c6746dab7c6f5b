"""Settings every test runs with: quick password hashing, an empty egress allow-list, and audit checkpoints and rate
limits of each test's own."""

import uuid

import pytest
from django.conf import settings
from django.test.utils import override_settings


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing():
    """Hashes are made with QuickPasswordHasher (tests/hashers.py). The production hasher stays listed after it, so a
    hash is still checked by the algorithm it names, and a quick hash is never upgraded during a test."""
    with override_settings(PASSWORD_HASHERS=["tests.hashers.QuickPasswordHasher", *settings.PASSWORD_HASHERS]):
        yield


@pytest.fixture(scope="session", autouse=True)
def egress_allows_nothing_at_first():
    """Whatever EGRESS_ALLOW the environment holds, the suite starts from an empty allow-list."""
    settings.EGRESS_ALLOW = []


@pytest.fixture
def egress_allow():
    """egress_allow(*entries): EGRESS_ALLOW gains them (tests.helpers.allow_egress) until the test ends."""
    from tests.helpers import allow_egress

    undos = []
    yield lambda *entries: undos.append(allow_egress(*entries))
    for undo in reversed(undos):
        undo()


@pytest.fixture(scope="session", autouse=True)
def quick_product_timings():
    """Product waits that tests would otherwise sit through, shortened (their production defaults are in
    portal/settings.py): the health checks try a broker that did not answer again after 0.1 s, not 2 s (each /health/
    request with Redis stopped waited for that retry)."""
    with override_settings(HEALTH_BROKER_RETRY_SECONDS=0.1):
        yield


@pytest.fixture(autouse=True)
def audit_checkpoints_and_rate_limits_of_the_test(settings, tmp_path):
    """Each test's audit chain starts empty, so its checkpoints go to a file of its own; and its requests are counted
    against rate limits of its own (one test's API calls must not use up the next one's), as are its open log sockets."""
    settings.AUDIT_CHECKPOINT_PATH = tmp_path / "audit-checkpoints.jsonl"
    settings.RATE_LIMIT_KEY_PREFIX = f"test-ratelimit:{uuid.uuid4().hex}"
    settings.LOG_SOCKETS_KEY_PREFIX = f"test-log-sockets:{uuid.uuid4().hex}"
