"""The OpenAPI schema against the live API: schemathesis generates requests for every operation (valid and invalid
input) and sends them, with the portal's own tokens, to a real daphne serving the portal on the test database. No
answer may be a 500, and every answer must be what the schema says (status, content type, headers, body).

Examples per operation are bounded (EXAMPLES) so the whole run takes seconds, not minutes; the operation count and the
failures are printed (docs/api.md quotes them)."""

import signal
import socket
import sys

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from builds import services as builds_services
from portal import tokens
from tests.helpers import free_port, wait_for
from tests.plugins.processes import PortalProcess, subprocess_env

pytestmark = [pytest.mark.processes, pytest.mark.slow]

EXAMPLES = 4  # per operation and mode (valid input, invalid input): about 430 calls
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Invalid input gets the same checks. Not schemathesis' negative_data_rejection: it counts a query parameter the
# operation does not name as invalid input to refuse, where the API ignores it (as the pages do); invalid bodies and
# values are refused with a 400 naming the field (tests/api/test_core.py, test_builds.py).
NEGATIVE_CHECKS = CHECKS


@pytest.fixture
def api_server(redis_server, tmp_path, transactional_db):
    """daphne serving the portal on a free loopback port, with rate limits far above what the fuzzing sends."""
    port = free_port()
    env = subprocess_env(redis_server.url, API_RATE_LIMIT_PER_TOKEN="100000/m", API_RATE_LIMIT_PER_ADDRESS="100000/m")
    server = PortalProcess(
        "web",
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
        env,
        tmp_path,
    )

    def answers():
        if server.process.poll() is not None:
            raise AssertionError(f"daphne exited: {server.output()[-2000:]}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(answers, timeout=120, what="daphne to listen")  # a loaded machine starts it slowly
    server.url = f"http://127.0.0.1:{port}"
    yield server
    server.stop(signal.SIGKILL)  # the test is over: daphne's orderly exit took seconds on a busy machine


def seed(personas):
    """Objects for the generated ids and names to find sometimes: a definition with a revision and a build."""
    definition = builds_services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    builds_services.revision_create(
        definition=definition,
        user=personas.developer,
        containerfile="FROM quay.io/centos-bootc/centos-bootc:stream10\n",
    )
    builds_services.build_start(revision=definition.current_revision(), user=personas.developer)


def test_every_operation_answers_as_its_schema_says_and_never_500(api_server, personas, capsys):
    seed(personas)
    token = tokens.token_create(
        actor=personas.admin, name="schemathesis", scopes=["read", "build", "promote", "approve", "operate", "admin"]
    )[1]
    schema = schemathesis.openapi.from_url(f"{api_server.url}/api/v1/openapi.json")
    operations, failures, calls = 0, [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode, checks in ((GenerationMode.POSITIVE, CHECKS), (GenerationMode.NEGATIVE, NEGATIVE_CHECKS)):
            _exercise(operation, mode, checks, api_server, personas, token, failures, calls)
    with capsys.disabled():
        print(f"\nschemathesis: {operations} operations, {len(calls)} calls, {len(failures)} failures")
    assert operations >= 20
    assert "Traceback" not in api_server.output()
    assert not failures, "\n\n".join(dict.fromkeys(failures))


def _exercise(operation, mode, checks, api_server, personas, token, failures, calls):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case):
        # Revoking a token is one of the operations: each of those calls revokes a token of its own.
        secret = token
        if operation.method.upper() == "DELETE" and operation.path.startswith("/api/v1/tokens/"):
            secret = tokens.token_create(actor=personas.admin, name="to revoke", scopes=["read"])[1]
        try:
            response = case.call(base_url=api_server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
            calls.append(response.status_code)
            case.validate_response(response, checks=checks)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected, then reported together
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {str(exc)[:600]}")

    try:
        exercise()
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - what hypothesis re-raises, kept with the rest
        failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {str(exc)[:600]}")
