"""Friendly error pages: nothing technical leaks, and each says what to do next."""

from django.test import RequestFactory

from portal import views


def test_the_500_page_is_friendly_and_self_contained():
    response = views.error_500(RequestFactory().get("/"))
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body and "Traceback" not in body
    assert "{%" not in body  # rendered without the base template, so it works even when the database is down


def test_the_404_page_does_not_say_whether_the_object_exists(client, django_user_model):
    user = django_user_model.objects.create(username="someone")
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    body = client.get("/runs/424242/").content.decode()
    assert "does not exist, or it belongs to a team you are not a member of" in body
