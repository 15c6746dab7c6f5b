"""The API's event list (/api/v1/events/), what the CLI's `watch` polls: the caller's teams' events, oldest first, with
a cursor, filters by team and type, the kinds of event and their JSON Schemas; anonymous, outsider, read-only and
member access; bad input named."""

import jsonschema
import pytest

from portal import events
from tests.api.fixtures import problem

pytestmark = pytest.mark.django_db


def emit(team, kind="build.failed", name="b"):
    return events.emit(type=kind, team=team, data={"n": name},
                       subject=events.Subject(kind="build", id=1, name=name, path="/", api_path="/api/v1/builds/1/"))


@pytest.mark.parametrize("who, seen", [("anonymous", None), ("outsider", ["theirs"]), ("viewer", ["a", "b"]),
                                       ("superuser", ["a", "theirs", "b", "portal-wide"])])
def test_each_caller_reads_the_events_of_their_own_teams(personas, api_as, who, seen):
    emit(personas.team, name="a")
    emit(personas.other_team, name="theirs")
    emit(personas.team, name="b")
    events.emit(type="retention.run", team=None, data={},
                subject=events.Subject(kind="retention_run", id=1, name="portal-wide", path="/"))
    response = api_as(None if who == "anonymous" else getattr(personas, who), "read").get("events/")
    if seen is None:
        problem(response, 401)
        return
    assert response.status_code == 200
    assert [e["subject"]["name"] for e in response.json()["items"]] == seen


def test_a_watcher_polls_with_the_last_id_and_gets_each_event_once(personas, api_as):
    api = api_as(personas.viewer, "read")
    first = emit(personas.team, name="first")
    page = api.get("events/").json()
    assert [e["id"] for e in page["items"]] == [str(first.uuid)] and page["last"] == str(first.uuid)
    assert api.get("events/", {"after": page["last"]}).json() == {"items": [], "last": page["last"]}
    second, third = emit(personas.team, "host.unreachable", "second"), emit(personas.team, name="third")
    page = api.get("events/", {"after": page["last"]}).json()
    assert [e["subject"]["name"] for e in page["items"]] == ["second", "third"] and page["last"] == str(third.uuid)
    only = api.get("events/", {"type": ["host.unreachable"], "team": personas.team.slug}).json()
    assert [e["id"] for e in only["items"]] == [str(second.uuid)]


def test_the_api_serves_the_envelope_exactly_as_stored_and_webhooks_get_it(personas, api_as):
    event = emit(personas.team)
    [served] = api_as(personas.developer, "read").get("events/").json()["items"]
    assert served == event.envelope


def test_another_teams_filter_is_a_404_and_bad_arguments_are_400s_naming_them(personas, api_as):
    api = api_as(personas.outsider, "read")
    problem(api.get("events/", {"team": personas.team.slug}), 404)
    assert problem(api.get("events/", {"after": "not-an-id"}), 400)["errors"][0]["field"] == "query.after"
    assert problem(api.get("events/", {"type": "build.exploded"}), 400)["errors"][0]["field"] == "query.type"
    problem(api.get("events/", {"limit": 0}), 400)
    problem(api.get("events/", {"limit": 501}), 400)
    # A NUL character anywhere is refused before any lookup (portal.api), naming where.
    assert problem(api.get("events/", {"team": "x\x00y"}), 400)["errors"][0]["field"] == "query.team"


def test_the_kinds_of_event_and_each_schema_are_served(personas, api_as):
    api = api_as(personas.viewer, "read")
    kinds = {t["type"]: t for t in api.get("events/types/").json()}
    assert kinds["promotion.applied"] == {"type": "promotion.applied", "version": 1, "label": "Promotion applied"}
    schema = api.get("events/types/host.drift/schema/").json()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["type"] == {"const": "host.drift"}
    problem(api.get("events/types/host.exploded/schema/"), 404)
    problem(api_as(None).get("events/types/"), 401)
