"""Every page and action of the builds app that tests/builds/test_views.py does not already try four ways: anonymous,
an outsider (a developer of another team), read-only roles, and the role that may. Refused attempts change nothing."""

import pytest
from django.urls import reverse

from builds import integrations as integration_services
from builds import services
from builds.models import ApiToken, Build, Builder, GitCredential, GitWebhook, ImageDefinition, RegistryCredential
from portal.models import RunStatus
from portal.services import run_finish
from tests.helpers import free_port

pytestmark = pytest.mark.django_db

CONTAINERFILE = "FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN bootc container lint\n"


def status_of(client_for, personas, who, method, url, data=None):
    """The status code `who` gets, or "login" when an anonymous user is sent to the login page."""
    user = None if who == "anonymous" else getattr(personas, who)
    response = getattr(client_for(user), method)(url, data or {})
    if response.status_code == 302 and response["Location"].startswith("/login/"):
        return "login"
    return response.status_code


def statuses(client_for, personas, method, url, whos, data=None):
    return {who: status_of(client_for, personas, who, method, url, data) for who in whos}


@pytest.fixture
def definition(personas):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE)
    services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE + "\n")
    return definition


@pytest.fixture
def failed_build(definition, personas):
    build = services.build_start(revision=definition.current_revision(), user=personas.developer)
    run_finish(build.run, status=RunStatus.FAILED, reason="boom")
    return build


# --- Definitions, revisions, builds ----------------------------------------------------------------------------------


def test_the_diff_between_revisions_is_seen_by_the_team_only(client_for, personas, definition):
    url = reverse("builds:revision_diff", args=[definition.pk]) + "?from=1&to=2"
    assert statuses(client_for, personas, "get", url, ["anonymous", "outsider", "helpdesk", "viewer", "developer"]) == {
        "anonymous": "login", "outsider": 404, "helpdesk": 404, "viewer": 200, "developer": 200}


def test_checking_a_containerfile_as_it_is_written_needs_the_developer_role(client_for, personas, definition):
    url = reverse("builds:revision_check", args=[definition.pk])
    data = {"containerfile": "FROM quay.io/fedora/fedora-bootc:latest\nFROBNICATE x\n"}
    refused = statuses(client_for, personas, "post", url, ["anonymous", "outsider", "helpdesk", "viewer", "operator"],
                       data)
    assert refused == {"anonymous": "login", "outsider": 404, "helpdesk": 404, "viewer": 403, "operator": 403}
    issues = client_for(personas.developer).post(url, data).json()["issues"]
    assert [(i["level"], i["line"]) for i in issues if i["code"] != "no-lint"][:2] == [("error", 2), ("warning", 1)]
    assert definition.revisions.count() == 2  # nothing saved
    assert client_for(personas.developer).get(url).status_code == 405


def test_building_an_older_revision_needs_the_developer_role(client_for, personas, definition):
    url = reverse("builds:revision_build", args=[definition.pk, 1])
    refused = statuses(client_for, personas, "post", url, ["anonymous", "outsider", "viewer", "operator"])
    assert refused == {"anonymous": "login", "outsider": 404, "viewer": 403, "operator": 403}
    assert not Build.objects.exists()
    assert status_of(client_for, personas, "developer", "post", url) == 302
    assert Build.objects.get().revision.number == 1


def test_retrying_a_build_needs_the_developer_role(client_for, personas, failed_build):
    url = reverse("portal:run_retry", args=[failed_build.run_id])
    refused = statuses(client_for, personas, "post", url, ["anonymous", "outsider", "viewer", "operator"])
    assert refused == {"anonymous": "login", "outsider": 404, "viewer": 403, "operator": 403}
    assert Build.objects.count() == 1
    assert status_of(client_for, personas, "developer", "post", url) == 302
    assert Build.objects.filter(retry_of=failed_build).count() == 1


def test_changing_a_definitions_settings_needs_the_developer_role(client_for, personas, definition):
    url = reverse("builds:definition_edit", args=[definition.pk])
    data = {"description": "changed", "platforms": ["linux/amd64"], "timeout_minutes": 30, "build_args": ""}
    refused = statuses(client_for, personas, "post", url, ["anonymous", "outsider", "viewer"], data)
    assert refused == {"anonymous": "login", "outsider": 404, "viewer": 403}
    definition.refresh_from_db()
    assert definition.description == ""
    assert status_of(client_for, personas, "developer", "post", url, data) == 302
    definition.refresh_from_db()
    assert definition.description == "changed"


def test_deleting_a_definition_is_refused_to_outsiders_and_viewers(client_for, personas, definition):
    url = reverse("builds:definition_delete", args=[definition.pk])
    assert statuses(client_for, personas, "post", url, ["anonymous", "outsider", "viewer", "operator"]) == {
        "anonymous": "login", "outsider": 404, "viewer": 403, "operator": 403}
    assert ImageDefinition.objects.filter(pk=definition.pk).exists()


# --- A team's integrations: only its admins --------------------------------------------------------------------------


@pytest.mark.parametrize("name, data, model", [
    ("credential_create", {"registry": "quay.io", "username": "robot", "password": "x"}, RegistryCredential),
    ("git_credential_create", {"host": "git.example.com", "username": "ci", "token": "x"}, GitCredential),
    ("token_create", {"name": "ci"}, ApiToken),
    ("webhook_create", {}, GitWebhook),
])
def test_adding_integrations_is_for_team_admins(client_for, personas, name, data, model):
    url = reverse(f"builds:{name}", args=[personas.team.slug])
    refused = statuses(client_for, personas, "post", url, ["anonymous", "outsider", "viewer", "developer"], data)
    assert refused == {"anonymous": "login", "outsider": 404, "viewer": 403, "developer": 403}
    assert not model.objects.exists()
    assert status_of(client_for, personas, "admin", "post", url, data) in (200, 302)
    assert model.objects.filter(team=personas.team).count() == 1


@pytest.fixture
def integrations(personas):
    credential = integration_services.registry_credential_save(team=personas.team, user=personas.admin, registry="quay.io",
                                                   username="robot", password="x", insecure=False)
    token, _ = integration_services.api_token_create(team=personas.team, user=personas.admin, name="ci")
    hook, _ = integration_services.webhook_create(team=personas.team, user=personas.admin)
    git_login = integration_services.git_credential_save(team=personas.team, user=personas.admin, host="git.example.com",
                                             username="ci", token="x")
    return {"credential_delete": credential, "token_revoke": token, "webhook_delete": hook,
            "git_credential_delete": git_login}


@pytest.mark.parametrize("name", ["credential_delete", "git_credential_delete", "token_revoke", "webhook_delete"])
def test_removing_integrations_is_for_team_admins(client_for, personas, integrations, name):
    obj = integrations[name]
    url = reverse(f"builds:{name}", args=[obj.pk])
    refused = statuses(client_for, personas, "post", url, ["anonymous", "outsider", "viewer", "developer"])
    assert refused == {"anonymous": "login", "outsider": 404, "viewer": 403, "developer": 403}
    assert type(obj).objects.filter(pk=obj.pk).exists()
    if name == "token_revoke":
        assert ApiToken.objects.get(pk=obj.pk).active
    assert status_of(client_for, personas, "admin", "post", url) == 302
    if name == "token_revoke":
        assert not ApiToken.objects.get(pk=obj.pk).active
    else:
        assert not type(obj).objects.filter(pk=obj.pk).exists()


# --- Builders: portal-wide, changed by superusers only --------------------------------------------------------------


@pytest.fixture
def offline_builder(db):
    """An SSH builder on a port nobody listens on: a health check fails at once, without running podman."""
    return Builder.objects.create(name="gone", kind="ssh", architecture="arm64", host="127.0.0.1", port=free_port(),
                                  username="build", private_key="x",
                                  host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")


@pytest.mark.parametrize("name", ["builder_check", "builder_toggle"])
def test_only_superusers_check_and_toggle_builders(client_for, personas, offline_builder, name):
    url = reverse(f"builds:{name}", args=[offline_builder.pk])
    refused = statuses(client_for, personas, "post", url, ["anonymous", "outsider", "developer", "admin"])
    assert refused == {"anonymous": "login", "outsider": 403, "developer": 403, "admin": 403}
    offline_builder.refresh_from_db()
    assert offline_builder.enabled and offline_builder.health_ok is None
    assert status_of(client_for, personas, "superuser", "post", url) == 302
    offline_builder.refresh_from_db()
    assert (not offline_builder.enabled) if name == "builder_toggle" else (offline_builder.health_ok is False)


def test_only_superusers_edit_builders(client_for, personas, offline_builder):
    url = reverse("builds:builder_edit", args=[offline_builder.pk])
    assert statuses(client_for, personas, "get", url, ["anonymous", "viewer", "admin", "superuser"]) == {
        "anonymous": "login", "viewer": 403, "admin": 403, "superuser": 200}
    assert status_of(client_for, personas, "superuser", "get", reverse("builds:builder_edit", args=[999999])) == 404


# --- The API: a token or nothing -------------------------------------------------------------------------------------


def test_reading_builds_and_definitions_through_the_api_needs_a_token(client, client_for, personas, failed_build):
    for url in (reverse("builds:api_build_detail", args=[failed_build.pk]), reverse("builds:api_definition_list")):
        assert client.get(url).status_code == 401
        assert client.get(url, HTTP_AUTHORIZATION="Bearer imp_not-a-token").status_code == 401
        # A logged-in session is not a token: the API never answers on a browser's cookie.
        assert client_for(personas.developer).get(url).status_code == 401
