"""The REST API's definitions, revisions, builds and runs: who may do what (anonymous, outsider, read-only, allowed),
scopes, bad bodies, filters like the pages', and the old `imp_` tokens on the first API's paths."""

import base64

import pytest
from django.urls import reverse

from builds import services
from builds.models import Build, ImageDefinition, Revision
from portal.models import AuditEvent, RunStatus
from portal.services import run_finish
from tests.api.fixtures import ApiClient, problem

pytestmark = pytest.mark.django_db

CONTAINERFILE = "FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN bootc container lint\n"


@pytest.fixture
def definition(personas):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE)
    return definition


@pytest.fixture
def failed_build(definition, personas):
    build = services.build_start(revision=definition.current_revision(), user=personas.developer)
    run_finish(build.run, status=RunStatus.FAILED, reason="boom")
    return build


def caller(personas, api_as, who, *scopes):
    return api_as(None if who == "anonymous" else getattr(personas, who), *scopes)


# --- Who may do what -------------------------------------------------------------------------------------------------

READERS = [("anonymous", 401), ("outsider", 404), ("helpdesk", 404), ("viewer", 200), ("developer", 200)]


@pytest.mark.parametrize("who, status", READERS)
def test_reading_a_definition_its_revisions_and_builds(personas, api_as, definition, failed_build, who, status):
    api = caller(personas, api_as, who, "read")
    for path in (f"definitions/{definition.pk}/", f"definitions/{definition.pk}/revisions/",
                 f"definitions/{definition.pk}/revisions/1/", f"builds/{failed_build.pk}/",
                 f"builds/{failed_build.pk}/compare/{failed_build.pk}/", f"runs/{failed_build.run_id}/",
                 f"runs/{failed_build.run_id}/log/"):
        response = api.get(path)
        assert response.status_code == status, (path, response.content[:300])
    listed = api.get("builds/")
    if status == 200:
        assert [b["id"] for b in listed.json()["items"]] == [failed_build.pk]
    elif who != "anonymous":
        assert listed.json()["items"] == []


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("viewer", 403), ("operator", 403),
                                         ("developer", 201)])
def test_triggering_a_build_needs_the_developer_role(personas, api_as, definition, who, status):
    response = caller(personas, api_as, who, "read", "build").post("builds/", {"definition": "platform/web-os"})
    assert response.status_code == status, response.content[:300]
    assert Build.objects.exists() == (status == 201)
    if status == 201:
        build = response.json()["builds"][0]
        assert build["status"] == "queued" and build["trigger"] == "api" and build["started_by"] == "developer"
        assert AuditEvent.objects.filter(action="build.start", actor=personas.developer).exists()


def test_a_token_without_the_build_scope_gets_a_403_naming_it(personas, api_as, definition, failed_build):
    api = api_as(personas.developer, "read")
    for path, body in [("builds/", {"definition": definition.pk}), (f"builds/{failed_build.pk}/retry/", {}),
                       (f"builds/{failed_build.pk}/cancel/", {}), ("definitions/", {"team": "platform", "name": "x"}),
                       (f"definitions/{definition.pk}/revisions/", {"containerfile": CONTAINERFILE})]:
        assert problem(api.post(path, body), 403)["missing_scope"] == "build"
    assert Build.objects.count() == 1 and Revision.objects.count() == 1


def test_another_team_s_definition_is_a_404_by_id_and_by_name(personas, api_as, definition):
    api = api_as(personas.outsider, "read", "build")
    problem(api.post("builds/", {"definition": definition.pk}), 404)
    problem(api.post("builds/", {"definition": "platform/web-os"}), 404)
    problem(api.post(f"definitions/{definition.pk}/revisions/", {"containerfile": CONTAINERFILE}), 404)
    problem(api.post("definitions/", {"team": "platform", "name": "mine-now"}), 404)
    assert not Build.objects.exists() and ImageDefinition.objects.count() == 1


# --- Definitions and revisions ---------------------------------------------------------------------------------------


def test_a_developer_creates_a_definition_and_a_revision_with_context_files(personas, api_as):
    api = api_as(personas.developer, "read", "build")
    created = api.post("definitions/", {"team": "platform", "name": "edge-os", "platforms": ["linux/amd64"],
                                        "build_args": {"VERSION": "1"}})
    assert created.status_code == 201, created.content
    definition_id = created.json()["id"]
    problem(api.post("definitions/", {"team": "platform", "name": "edge-os"}), 409)
    revision = api.post(f"definitions/{definition_id}/revisions/", {
        "containerfile": "FROM quay.io/centos-bootc/centos-bootc:stream10\nCOPY motd /etc/motd\n", "message": "motd",
        "context_kind": "files", "context_files": {"motd": base64.b64encode(b"hello\n").decode()}})
    assert revision.status_code == 201, revision.content
    assert revision.json()["number"] == 1 and revision.json()["context_files"] == ["motd"]
    changed = api.patch(f"definitions/{definition_id}/", {"description": "for the edge"})
    assert changed.status_code == 200 and changed.json()["description"] == "for the edge"
    assert changed.json()["build_args"] == {"VERSION": "1"}


def test_a_containerfile_the_page_would_refuse_is_a_400_naming_the_field(personas, api_as, definition):
    api = api_as(personas.developer, "read", "build")
    body = problem(api.post(f"definitions/{definition.pk}/revisions/", {"containerfile": "RUN echo no base\n"}), 400)
    assert body["errors"][0]["field"] == "body.containerfile"
    body = problem(api.post(f"definitions/{definition.pk}/revisions/", {
        "containerfile": CONTAINERFILE, "context_kind": "files", "context_files": {"a": "***"}}), 400)
    assert body["errors"][0]["field"] == "body.context_files.a"
    assert Revision.objects.count() == 1


@pytest.mark.parametrize("body, field", [
    ({"definition": "platform/web-os", "revision": "one"}, "body.revision"),
    ({"definition": "platform/web-os", "platform": "linux/s390x"}, "body.platform"),
    ({"definition": "platform/web-os", "priority": "high"}, "body.priority"),
    ({"definition": [1]}, "body.definition"),
    ({}, "body.definition"),
    ("{", "body"),
])
def test_a_bad_build_request_is_a_400_naming_the_field_and_builds_nothing(personas, api_as, definition, body, field):
    found = problem(api_as(personas.developer, "read", "build").post("builds/", body), 400)
    assert found["errors"][0]["field"] == field
    assert not Build.objects.exists()


def test_a_bad_definition_is_a_400_naming_the_field(personas, api_as):
    api = api_as(personas.developer, "read", "build")
    assert problem(api.post("definitions/", {"team": "platform", "name": "Not A Name!"}), 400)["errors"][0][
        "field"] == "body.name"
    assert problem(api.post("definitions/", {"team": "platform", "name": "ok", "timeout_minutes": 0}), 400)[
        "errors"][0]["field"] == "body.timeout_minutes"
    assert not ImageDefinition.objects.exists()


# --- Builds ----------------------------------------------------------------------------------------------------------


def test_cancel_and_retry_go_through_the_same_services_as_the_buttons(personas, api_as, definition):
    api = api_as(personas.developer, "read", "build")
    build_id = api.post("builds/", {"definition": definition.pk}).json()["builds"][0]["id"]
    problem(api.post(f"builds/{build_id}/retry/"), 409)  # still queued
    cancelled = api.post(f"builds/{build_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    problem(api.post(f"builds/{build_id}/cancel/"), 409)
    retried = api.post(f"builds/{build_id}/retry/")
    assert retried.status_code == 201 and retried.json()["number"] == 2 and retried.json()["status"] == "queued"
    assert AuditEvent.objects.filter(action="run.cancel", actor=personas.developer).exists()
    problem(api_as(personas.viewer, "read", "build").post(f"builds/{build_id}/retry/"), 403)


def test_builds_are_filtered_like_the_builds_page(personas, api_as, definition, failed_build):
    queued = services.build_start(revision=definition.current_revision(), user=personas.developer)
    api = api_as(personas.viewer)
    ids = lambda **query: [b["id"] for b in api.get("builds/", query).json()["items"]]  # noqa: E731
    assert ids() == [queued.pk, failed_build.pk]
    assert ids(status="failed") == [failed_build.pk]
    assert ids(status="queued", team="platform") == [queued.pk]
    assert ids(team="other") == [] and ids(q="web-os") == [queued.pk, failed_build.pk]
    assert ids(trigger="api") == [] and ids(definition=definition.pk) == [queued.pk, failed_build.pk]
    problem(api.get("builds/", {"status": "exploded"}), 400)


def test_two_builds_compare_like_the_compare_page(personas, api_as, definition, failed_build):
    second = services.revision_create(definition=definition, user=personas.developer,
                                      containerfile=CONTAINERFILE + "RUN echo more\n")
    newer = services.build_start(revision=second, user=personas.developer)
    body = api_as(personas.viewer).get(f"builds/{failed_build.pk}/compare/{newer.pk}/").json()
    assert not body["same_revision"] and "+RUN echo more" in body["containerfile_diff"]


def test_a_run_log_is_read_by_range(personas, api_as, failed_build):
    from portal.logsink import LogSink

    with LogSink(failed_build.run) as sink:
        for n in range(1, 8):
            sink.write(f"line {n}")
    api = api_as(personas.viewer)
    page = api.get(f"runs/{failed_build.run_id}/log/", {"after": 2, "limit": 3}).json()
    assert [line["text"] for line in page["lines"]] == ["line 3", "line 4", "line 5"]
    assert page["first"] == 3 and page["next_after"] == 5 and page["last"] == 7 and not page["finished"]
    rest = api.get(f"runs/{failed_build.run_id}/log/", {"after": page["next_after"]}).json()
    assert [line["seq"] for line in rest["lines"]] == [6, 7] and rest["finished"]
    tail = api.get(f"runs/{failed_build.run_id}/log/", {"tail": "true", "limit": 2}).json()
    assert [line["text"] for line in tail["lines"]] == ["line 6", "line 7"]
    problem(api.get(f"runs/{failed_build.run_id}/log/", {"after": -1}), 400)


# --- The first API's paths and tokens --------------------------------------------------------------------------------


def test_old_imp_tokens_still_get_the_old_answers_on_the_old_paths(personas, definition, failed_build, api_as):
    from builds.integrations import api_token_create

    _, secret = api_token_create(team=personas.team, user=personas.admin, name="old ci")
    old = ApiClient(secret)
    listing = old.get("definitions/").json()
    assert listing["team"] == "platform" and listing["definitions"][0]["name"] == "web-os"
    assert old.get(f"builds/{failed_build.pk}/").json()["status"] == "failed"
    created = old.post("builds/", {"definition": "platform/web-os"})
    assert created.status_code == 201 and created.json()["builds"][0]["trigger"] == "api"
    # The same paths answer a new token with the REST API's shapes.
    problem(ApiClient(None).get("definitions/"), 401)
    items = api_as(personas.developer, "read").get("definitions/").json()["items"]
    assert items[0]["name"] == "web-os" and items[0]["latest_build"]["trigger"] == "api"


def test_every_url_the_first_api_had_still_resolves_to_it():
    assert reverse("builds:api_build_create") == "/api/v1/builds/"
    assert reverse("builds:api_definition_list") == "/api/v1/definitions/"


# --- Every write of these routers, by persona ------------------------------------------------------------------------

WRITES = [
    # (method, path (with {definition}/{build}/{team}), body, scope, the least role that may)
    ("post", "definitions/", {"team": "{team}", "name": "another-os"}, "build", "developer"),
    ("patch", "definitions/{definition}/", {"description": "changed"}, "build", "developer"),
    ("post", "definitions/{definition}/revisions/", {"containerfile": CONTAINERFILE + "\n"}, "build", "developer"),
    ("post", "builds/", {"definition": "{definition_id}"}, "build", "developer"),
    ("post", "builds/{build}/retry/", {}, "build", "developer"),
    ("post", "runs/{run}/cancel/", {}, "build", "developer"),
    ("post", "teams/{team}/members/", {"username": "helpdesk", "role": "viewer"}, "admin", "admin"),
    ("patch", "teams/{team}/members/viewer/", {"role": "developer"}, "admin", "admin"),
    ("delete", "teams/{team}/members/viewer/", None, "admin", "admin"),
]


@pytest.mark.parametrize("method, path, body, scope, least", WRITES, ids=[f"{m} {p}" for m, p, *_ in WRITES])
@pytest.mark.parametrize("who", ["anonymous", "outsider", "viewer", "least"])
def test_every_write_is_refused_to_whoever_may_not_and_done_for_whoever_may(personas, api_as, definition, failed_build,
                                                                            method, path, body, scope, least, who):
    if "cancel" in path:  # a run that can still be cancelled
        failed_build = services.build_start(revision=definition.current_revision(), user=personas.developer)
    values = {"definition": definition.pk, "build": failed_build.pk, "run": failed_build.run_id,
              "team": personas.team.slug}
    path = path.format(**values)
    if body:
        body = {k: (definition.pk if v == "{definition_id}" else v.format(**values) if isinstance(v, str) else v)
                for k, v in body.items()}
    user = None if who == "anonymous" else getattr(personas, least if who == "least" else who)
    api = api_as(user, "read", scope) if user else api_as(None)
    response = api.delete(path) if method == "delete" else getattr(api, method)(path, body)
    expected = {"anonymous": 401, "outsider": 404, "viewer": 403}.get(who)
    if expected:
        problem(response, expected)
    else:
        assert response.status_code in (200, 201, 204), (response.status_code, response.content[:300])
        # And without the scope, the same person is refused by name.
        again = api_as(user, "read")
        refused = again.delete(path) if method == "delete" else getattr(again, method)(path, body)
        assert problem(refused, 403)["missing_scope"] == scope
