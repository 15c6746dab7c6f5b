"""Login, logout, password change, throttling and CSRF: the right status, a readable page, and an audit record."""

import pytest
from django.test import Client

from portal.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def login(client, username, password):
    return client.post("/login/", {"username": username, "password": password})


def test_logging_in_is_audited(personas):
    client = Client()
    response = login(client, "developer", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/"
    event = AuditEvent.objects.get(action="auth.login")
    assert event.actor == personas.developer and event.ip_address == "127.0.0.1"


def test_wrong_credentials_get_a_readable_error_and_are_audited(personas):
    response = login(Client(), "developer", "wrong")
    assert response.status_code == 200
    assert b"do not match" in response.content
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.actor is None and event.actor_name == "developer"


def test_repeated_failures_lock_the_account_out(personas, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "developer", "wrong")
    response = login(client, "developer", PASSWORD)  # even the right password is refused now
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in client.session


def test_a_lockout_is_per_username(personas, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "developer", "wrong")
    assert login(client, "viewer", PASSWORD).status_code == 302


def test_an_empty_login_form_is_not_an_error(personas):
    response = Client().post("/login/", {})
    assert response.status_code == 200 and b"This field is required" in response.content


def test_a_nul_character_in_the_login_form_is_refused_readably_and_audited(personas):
    response = login(Client(), "devel\x00oper", "wrong\x00")
    assert response.status_code == 200 and b"Null characters are not allowed" in response.content
    event = AuditEvent.objects.get(action="auth.login_failed")
    assert event.actor_name == "devel\ufffdoper" and "devel\ufffdoper" in event.summary


def test_an_over_long_username_is_refused_readably_and_audited(personas):
    response = login(Client(), "x" * 5000, "wrong")
    assert response.status_code == 200 and b"at most 150 characters" in response.content
    assert AuditEvent.objects.get(action="auth.login_failed").actor_name == "x" * 150


def test_logout_is_a_post_and_is_audited(personas, client_for):
    client = client_for(personas.viewer)
    assert client.get("/logout/").status_code == 200  # a confirmation page, not a logout
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302
    assert AuditEvent.objects.filter(action="auth.logout", actor=personas.viewer).exists()


def test_changing_the_password(personas, client_for):
    client = client_for(personas.viewer)
    assert client_for(None).get("/password/").status_code == 302
    response = client.post("/password/", {"old_password": PASSWORD, "new_password1": "a much longer secret 42",
                                          "new_password2": "a much longer secret 42"})
    assert response.status_code == 302
    personas.viewer.refresh_from_db()
    assert personas.viewer.check_password("a much longer secret 42")
    assert AuditEvent.objects.filter(action="auth.password_change").exists()


def test_a_weak_new_password_is_explained(personas, client_for):
    response = client_for(personas.viewer).post(
        "/password/", {"old_password": PASSWORD, "new_password1": "123", "new_password2": "123"})
    assert response.status_code == 200 and b"too short" in response.content


def test_a_forged_csrf_token_is_refused_readably_and_audited(personas):
    client = Client(enforce_csrf_checks=True)
    client.force_login(personas.admin, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post(f"/teams/{personas.team.slug}/members/", {"user": "outsider", "role": "admin",
                                                                       "csrfmiddlewaretoken": "forged"})
    assert response.status_code == 403
    assert b"could not be verified" in response.content
    event = AuditEvent.objects.get(action="security.csrf_failure")
    assert event.actor == personas.admin and "members" in event.detail["path"]
    assert not personas.team.memberships.filter(user=personas.outsider).exists()
