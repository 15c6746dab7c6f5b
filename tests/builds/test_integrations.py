"""A team's integrations in the builds app: registry credentials, the first JSON API's tokens (access, bad input,
odd JSON) and git webhooks (GitHub and GitLab pushes, signatures, odd payloads).

Builds here are only queued (the task is enqueued after commit, which a `db` test never reaches)."""

import hashlib
import hmac
import json

import pytest
from django.db import connection
from django.urls import reverse

from builds import integrations, services
from builds.models import ApiToken, Build, ContextKind, RegistryCredential
from portal.models import AuditEvent
from tests.builds.fixtures import CONTAINERFILE

# --- Integrations: credentials, tokens, webhooks ---------------------------------------------------------------------


def test_registry_passwords_are_stored_encrypted_and_never_shown(client_for, personas):
    c = client_for(personas.admin)
    response = c.post(reverse("builds:credential_create", args=[personas.team.slug]),
                      {"registry": "quay.io", "username": "robot", "password": "hunter2-very-secret"})
    assert response.status_code == 302
    credential = RegistryCredential.objects.get()
    assert credential.password == "hunter2-very-secret"
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM builds_registrycredential")
        raw = cursor.fetchone()[0]
    assert "hunter2" not in raw
    assert b"hunter2" not in c.get(reverse("builds:integrations", args=[personas.team.slug])).content
    event = AuditEvent.objects.filter(action="registry_credential.save").get()
    assert "hunter2" not in json.dumps(event.detail)


def test_only_loopback_registries_may_skip_tls(client_for, personas, settings):
    settings.EGRESS_ALLOW = ["127.0.0.1:5000"]  # a loopback registry must also be allowed by the egress policy
    c = client_for(personas.admin)
    response = c.post(reverse("builds:credential_create", args=[personas.team.slug]),
                      {"registry": "quay.io", "username": "robot", "password": "x", "insecure": "on"})
    assert response.status_code == 400
    response = c.post(reverse("builds:credential_create", args=[personas.team.slug]),
                      {"registry": "127.0.0.1:5000", "insecure": "on"})
    assert response.status_code == 302


def test_integrations_are_for_team_admins(client_for, personas):
    url = reverse("builds:integrations", args=[personas.team.slug])
    assert client_for(personas.developer).get(url).status_code == 403
    assert client_for(personas.outsider).get(url).status_code == 404
    assert client_for(personas.admin).get(url).status_code == 200


@pytest.fixture
def api_token(personas):
    token, secret = integrations.api_token_create(team=personas.team, user=personas.admin, name="ci")
    return secret


def test_the_api_needs_a_valid_token(client, definition, api_token):
    url = reverse("builds:api_build_create")
    body = json.dumps({"definition": "platform/web-os"})
    assert client.post(url, body, content_type="application/json").status_code == 401
    assert client.post(url, body, content_type="application/json",
                       HTTP_AUTHORIZATION="Bearer imp_wrong").status_code == 401
    token = ApiToken.objects.get()
    integrations.api_token_revoke(token=token, user=None)
    assert client.post(url, body, content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {api_token}").status_code == 401
    assert not Build.objects.exists()


def test_ci_triggers_a_build_and_reads_its_status(client, definition, api_token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token}"}
    response = client.post(reverse("builds:api_build_create"), json.dumps({"definition": "platform/web-os"}),
                           content_type="application/json", **auth)
    assert response.status_code == 201
    data = response.json()["builds"][0]
    assert data["status"] == "queued" and data["trigger"] == "api" and data["definition"] == "platform/web-os"
    status = client.get(reverse("builds:api_build_detail", args=[data["id"]]), **auth)
    assert status.status_code == 200 and status.json()["number"] == 1
    listing = client.get(reverse("builds:api_definition_list"), **auth).json()
    assert listing["definitions"][0]["latest_build"]["id"] == data["id"]
    assert AuditEvent.objects.filter(action="build.start", actor_name__contains="API token").exists()


def test_a_token_sees_nothing_of_other_teams(client, personas, definition):
    _, other_secret = integrations.api_token_create(team=personas.other_team, user=None, name="other")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {other_secret}"}
    build = services.build_start(revision=definition.current_revision(), user=personas.developer)
    assert client.get(reverse("builds:api_build_detail", args=[build.pk]), **auth).status_code == 404
    response = client.post(reverse("builds:api_build_create"), json.dumps({"definition": definition.pk}),
                           content_type="application/json", **auth)
    assert response.status_code == 404
    response = client.post(reverse("builds:api_build_create"), json.dumps({"definition": "platform/web-os"}),
                           content_type="application/json", **auth)
    assert response.status_code == 404


@pytest.mark.parametrize("body", ["not json", "[1]", '{"definition": "platform/web-os", "revision": "x"}',
                                  '{"definition": "platform/web-os", "platform": "linux/s390x"}'])
def test_bad_api_input_is_a_400(client, definition, api_token, body):
    response = client.post(reverse("builds:api_build_create"), body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 400 and "error" in response.json()


@pytest.fixture
def git_definition(personas):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="from-git")
    services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE,
                             context_kind=ContextKind.GIT, git_url="https://git.example.com/acme/os.git",
                             git_ref="main")
    return definition


@pytest.fixture
def webhook(personas):
    return integrations.webhook_create(team=personas.team, user=personas.admin)


def github_push(client, hook, secret, payload, *, signature=None):
    body = json.dumps(payload).encode()
    signature = signature or "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return client.post(reverse("builds:git_webhook", args=[hook.key]), body, content_type="application/json",
                       HTTP_X_GITHUB_EVENT="push", HTTP_X_HUB_SIGNATURE_256=signature)


PUSH = {"ref": "refs/heads/main", "after": "a" * 40,
        "repository": {"clone_url": "https://git.example.com/acme/os.git", "ssh_url": "git@git.example.com:acme/os.git"}}


def test_a_github_push_rebuilds_the_definitions_tracking_that_branch(client, git_definition, webhook):
    hook, secret = webhook
    response = github_push(client, hook, secret, PUSH)
    assert response.status_code == 202
    build = Build.objects.get()
    assert build.definition == git_definition and build.run.trigger == "webhook"
    # Another branch builds nothing.
    github_push(client, hook, secret, {**PUSH, "ref": "refs/heads/feature"})
    assert Build.objects.count() == 1


def test_a_webhook_with_a_bad_signature_gets_403_and_builds_nothing(client, git_definition, webhook):
    hook, secret = webhook
    assert github_push(client, hook, secret, PUSH, signature="sha256=" + "0" * 64).status_code == 403
    response = client.post(reverse("builds:git_webhook", args=[hook.key]), json.dumps(PUSH), content_type="application/json")
    assert response.status_code == 403
    response = client.post(reverse("builds:git_webhook", args=[hook.key]), json.dumps(PUSH), content_type="application/json",
                           HTTP_X_GITLAB_TOKEN="wrong")
    assert response.status_code == 403
    assert client.post(reverse("builds:git_webhook", args=["nope"]), "{}", content_type="application/json").status_code == 404
    assert not Build.objects.exists()


def test_a_gitlab_push_with_the_secret_token_rebuilds(client, git_definition, webhook):
    hook, secret = webhook
    payload = {"ref": "refs/heads/main", "checkout_sha": "b" * 40,
               "project": {"git_http_url": "https://git.example.com/acme/os.git"}}
    response = client.post(reverse("builds:git_webhook", args=[hook.key]), json.dumps(payload),
                           content_type="application/json", HTTP_X_GITLAB_EVENT="Push Hook", HTTP_X_GITLAB_TOKEN=secret)
    assert response.status_code == 202 and Build.objects.count() == 1



def test_team_admins_find_the_integrations_from_the_team_page(client_for, personas):
    url = reverse("builds:integrations", args=[personas.team.slug])
    assert url in client_for(personas.admin).get(personas.team.get_absolute_url()).content.decode()
    assert url not in client_for(personas.developer).get(personas.team.get_absolute_url()).content.decode()


@pytest.mark.parametrize("body, status", [
    ('{"definition": true}', 404),
    ('{"definition": "²"}', 404),
    ('{"definition": "platform/web-os\\u0000"}', 404),
    ('{"definition": 99999999999999999999999}', 404),
    ('{"definition": "platform/web-os", "revision": true}', 400),
    ('{"definition": "platform/web-os", "revision": 99999999999999999999999}', 404),
])
def test_odd_json_values_get_an_answer_not_a_crash(client, definition, api_token, body, status):
    response = client.post(reverse("builds:api_build_create"), body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == status and "error" in response.json()
    assert not Build.objects.exists()


def test_a_signed_push_with_nul_characters_in_its_text_is_recorded_with_replacement_characters(client, git_definition,
                                                                                                webhook):
    hook, secret = webhook
    response = github_push(client, hook, secret, {**PUSH, "ref": "refs/heads/ma\x00in", "after": "\x00" * 40,
                                                  "repository": {"clone_url": "https://git.example.com/a\x00"}})
    assert response.status_code == 202 and response.json()["builds"] == []
    hook.refresh_from_db()
    assert hook.last_delivery_summary == "push to ma\ufffdin (" + "\ufffd" * 12 + "): matched no definition"


@pytest.mark.parametrize("ref", [5, None, ["refs/heads/main"], {"x": 1}])
def test_a_signed_push_whose_ref_is_not_a_string_is_ignored(client, git_definition, webhook, ref):
    hook, secret = webhook
    response = github_push(client, hook, secret, {**PUSH, "ref": ref})
    assert response.status_code == 202 and response.json()["builds"] == []
    assert not Build.objects.exists()


@pytest.mark.parametrize("header, value", [
    ("HTTP_X_HUB_SIGNATURE_256", "sha256=" + "é" * 64),
    ("HTTP_X_HUB_SIGNATURE_256", "sha256=\u2603"),
    ("HTTP_X_GITLAB_TOKEN", "tökén"),
])
def test_a_webhook_signature_with_a_non_ascii_character_is_refused_naming_the_header(client, git_definition, webhook,
                                                                                      header, value):
    hook, _ = webhook
    response = client.post(reverse("builds:git_webhook", args=[hook.key]), json.dumps(PUSH), content_type="application/json",
                           HTTP_X_GITHUB_EVENT="push", **{header: value})
    assert response.status_code == 403
    name = "X-Hub-Signature-256" if "HUB" in header else "X-Gitlab-Token"
    assert name in response.json()["error"] and "ASCII" in response.json()["error"]
    assert not Build.objects.exists()
