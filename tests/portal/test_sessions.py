"""Sessions end when idle, and a password change signs out every other session of that user."""

import time

import pytest
from django.test import Client

from portal.sessions import LAST_ACTIVITY_KEY

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def signed_in_as(username):
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def last_active(client, seconds_ago):
    session = client.session
    session[LAST_ACTIVITY_KEY] = int(time.time()) - seconds_ago
    session.save()


class TestIdleExpiry:
    def test_a_session_idle_longer_than_the_limit_is_signed_out(self, personas, settings):
        client = signed_in_as("viewer")
        last_active(client, settings.SESSION_IDLE_MINUTES * 60 + 5)
        response = client.get("/")
        assert response.status_code == 302 and response["Location"].startswith("/login/")
        page = client.get(response["Location"]).content.decode()
        assert f"signed out after {settings.SESSION_IDLE_MINUTES} minutes without activity" in page
        assert "_auth_user_id" not in client.session

    def test_activity_keeps_a_session_alive(self, personas, settings):
        client = signed_in_as("viewer")
        last_active(client, settings.SESSION_IDLE_MINUTES * 60 - 30)
        assert client.get("/").status_code == 200
        assert time.time() - client.session[LAST_ACTIVITY_KEY] < 5
        assert client.get("/teams/").status_code == 200

    def test_background_polling_does_not_keep_a_session_alive(self, personas, settings):
        client = signed_in_as("viewer")
        last_active(client, 600)
        assert client.get("/audit/", HTTP_HX_REQUEST="true").status_code == 200
        assert time.time() - client.session[LAST_ACTIVITY_KEY] >= 600

    def test_the_idle_time_is_a_setting(self, personas, settings):
        settings.SESSION_IDLE_MINUTES = 5
        client = signed_in_as("viewer")
        last_active(client, 5 * 60 + 5)
        assert client.get("/").status_code == 302


class TestPasswordChange:
    def test_changing_the_password_signs_out_every_other_session_and_keeps_this_one(self, personas):
        laptop, phone, stolen = signed_in_as("viewer"), signed_in_as("viewer"), signed_in_as("viewer")
        response = laptop.post("/password/", {"old_password": PASSWORD, "new_password1": "a much longer secret 42",
                                              "new_password2": "a much longer secret 42"})
        assert response.status_code == 302
        assert laptop.get("/").status_code == 200
        for other in (phone, stolen):
            response = other.get("/")
            assert response.status_code == 302 and response["Location"].startswith("/login/")

    def test_other_users_sessions_are_not_touched(self, personas):
        viewer, developer = signed_in_as("viewer"), signed_in_as("developer")
        viewer.post("/password/", {"old_password": PASSWORD, "new_password1": "a much longer secret 42",
                                   "new_password2": "a much longer secret 42"})
        assert developer.get("/").status_code == 200


class TestTheSuitesSignedInClients:
    def test_each_client_has_a_session_of_its_own_signed_in_as_its_user(self, personas, client_for):
        first, second = client_for(personas.viewer), client_for(personas.viewer)
        assert first.session.session_key != second.session.session_key
        for client in (first, second):
            assert client.get("/").context["user"] == personas.viewer
        assert client_for(personas.developer).get("/").context["user"] == personas.developer
        assert first.post("/logout/").status_code == 302
        assert first.get("/").status_code == 302 and second.get("/").context["user"] == personas.viewer

    def test_a_client_made_after_a_password_change_is_signed_in_under_the_new_password(self, personas, client_for):
        client_for(personas.viewer)
        personas.viewer.set_password("another horse battery")
        personas.viewer.save()
        assert client_for(personas.viewer).get("/").context["user"] == personas.viewer
