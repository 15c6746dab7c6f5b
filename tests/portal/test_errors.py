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


def test_a_form_with_too_much_pasted_text_gets_a_page_that_says_so_and_saves_nothing(client, settings, django_user_model):
    from portal.models import Team

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    user = django_user_model.objects.create(username="someone", is_superuser=True)
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    teams = Team.objects.count()
    response = client.post("/teams/new/", {"name": "x" * 20_000})
    assert response.status_code == 400
    body = response.content.decode()
    assert "That was too much to paste" in body and "Nothing was saved" in body and "Traceback" not in body
    assert Team.objects.count() == teams


def test_a_malformed_request_gets_a_readable_400(client):
    response = client.get("/", HTTP_HOST="bad host name")
    assert response.status_code == 400
    assert "could not read that request" in response.content.decode()


def test_an_action_address_opened_in_a_browser_says_what_it_is(personas, client_for):
    client = client_for(personas.superuser)
    page = client.get("/teams/new/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert page.status_code == 405 and page["Allow"] == "POST"
    body = page.content.decode()
    assert "This address is not a page" in body and 'href="/teams/"' in body and "Dashboard" in body
    assert client.get("/teams/new/", HTTP_HX_REQUEST="true").content == b""  # htmx and scripts get the bare answer
    assert client.get("/teams/new/", HTTP_ACCEPT="application/json").content == b""
