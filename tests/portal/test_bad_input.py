"""No 500 for any form input: every field and query parameter of the portal's core pages (login, password, teams and
members, the team switcher, the audit filters, the run log's endpoints) fed what people and scripts send by mistake."""

import pytest

from portal import logsink, services
from portal.models import RunKind

pytestmark = pytest.mark.django_db

NASTY = ["", "   ", "\x00", "a\x00b", "x" * 5000, "²", "-1", "9" * 40, "1e9", "<script>alert(1)</script>", "😀 ünïcode",
         "' OR 1=1 --", "%00", "../../etc/passwd", "null", "ok", "/\x00/", "//evil.example/", "/a\r\nSet-Cookie: x=1",
         "javascript:alert(1)"]


@pytest.fixture
def run(personas):
    run = services.run_create(kind=RunKind.BUILD, title="build", team=personas.team)
    with logsink.LogSink(run, publish=False) as sink:
        sink.write("STEP 1/1: FROM x\nhello")
    return run


def forms(personas, run):
    """(user, method, path, field names) of every core form and filter."""
    slug, member = personas.team.slug, personas.viewer.pk
    return [
        (None, "post", "/login/", ["username", "password"]),
        (personas.viewer, "post", "/password/", ["old_password", "new_password1", "new_password2"]),
        (personas.superuser, "post", "/teams/new/", ["name", "description"]),
        (personas.admin, "post", f"/teams/{slug}/members/", ["user", "role"]),
        (personas.admin, "post", f"/teams/{slug}/members/{member}/role/", ["role"]),
        (personas.viewer, "post", "/switch-team/", ["team", "next"]),
        (personas.viewer, "post", "/account/two-factor/", ["code"]),
        (personas.viewer, "post", "/account/two-factor/verify/", ["code"]),
        (personas.admin, "post", f"/teams/{slug}/two-factor/", ["required"]),
        (personas.superuser, "get", "/audit/", ["team", "actor", "action", "object", "q", "page"]),
        (personas.viewer, "get", f"/runs/{run.pk}/log/", ["after"]),
        (personas.viewer, "get", f"/runs/{run.pk}/log/lines/", ["after", "before", "limit", "end"]),
        (personas.viewer, "get", f"/runs/{run.pk}/log/search/", ["q", "after", "limit"]),
        (personas.viewer, "get", f"/runs/{run.pk}/log.txt", ["gzip"]),
    ]


def test_no_500_for_any_value_in_any_field_of_the_core_forms(personas, run, client_for, settings):
    # The forms are under test, not the hashing: with the production hasher the ~120 password checks (login and
    # password change, each value in each field) take over a minute on these machines.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    for user, method, path, fields in forms(personas, run):
        client = client_for(user)
        for value in NASTY:
            for field in fields:
                data = {name: "ok" for name in fields} | {field: value}
                response = getattr(client, method)(path, data)
                assert response.status_code < 500, (path, field, value, response.status_code)
                if hasattr(response, "streaming_content"):
                    b"".join(response.streaming_content)
            data = {name: value for name in fields}  # every field at once
            assert getattr(client, method)(path, data).status_code < 500, (path, value)


def test_no_500_for_any_second_factor_code_at_sign_in(personas, settings):
    from tests.portal.two_factor import enroll, sign_in

    settings.OTP_TOTP_THROTTLE_FACTOR = settings.OTP_STATIC_THROTTLE_FACTOR = 0  # every value is really checked
    enroll(personas.developer)
    client, response = sign_in("developer", "not a code")
    assert response.status_code == 200
    for value in NASTY:
        response = client.post("/login/verify/", {"code": value})
        assert response.status_code < 500, (value, response.status_code)
        assert "_auth_user_id" not in client.session
