"""`GET /api/v1/me/`: who a token acts as (a person, or a team token's own user), its scopes, teams and expiry."""

import pytest

from tests.api.fixtures import problem

pytestmark = pytest.mark.django_db


def test_without_a_token_it_is_401(api_as):
    problem(api_as(None).get("me/"), 401)


def test_a_user_token_says_who_with_which_scopes_and_teams(personas, api_as):
    body = api_as(personas.developer, "read", "build").get("me/").json()
    assert (body["user"], body["team"], body["scopes"]) == ("developer", None, ["read", "build"])
    assert body["teams"] == [{"slug": personas.team.slug, "role": "developer"}]
    assert body["token"]["name"] == "test" and body["token"]["two_factor"] is False


def test_a_team_token_names_its_team_and_sees_only_it(personas, api_as):
    body = api_as(personas.admin, "read", "build", team=personas.team).get("me/").json()
    assert body["team"] == personas.team.slug and body["user"] != "teamadmin"
    assert [t["slug"] for t in body["teams"]] == [personas.team.slug]


def test_an_outsider_sees_only_their_own_team(personas, api_as):
    body = api_as(personas.outsider, "read").get("me/").json()
    assert body["teams"] == [{"slug": personas.other_team.slug, "role": "developer"}]
