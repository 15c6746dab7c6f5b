"""The REST API's core: tokens (scopes, expiry, revocation, hashing, audit, second factor), problem documents, ETags,
cursor pagination, rate limits, and the core's routers (teams, members, the caller's tokens)."""

import re
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal import notifications, services, tokens
from portal.models import AccessToken, Action, AuditEvent, Membership, Role
from tests.api.fixtures import ApiClient, problem

pytestmark = pytest.mark.django_db


# --- Authentication --------------------------------------------------------------------------------------------------


def test_no_token_is_a_401_problem_that_says_how_to_send_one(api_as):
    body = problem(api_as(None).get("teams/"), 401)
    assert "Bearer" in body["detail"]
    assert api_as(None).get("teams/")["WWW-Authenticate"].startswith("Bearer")


def test_a_signed_in_browser_session_is_not_a_token(client_for, personas):
    problem(client_for(personas.developer).get("/api/v1/teams/"), 401)


def test_unknown_revoked_and_expired_tokens_are_401(personas, make_token):
    problem(ApiClient("impt_not-a-token").get("teams/"), 401)
    secret = make_token(personas.developer, "read")
    assert ApiClient(secret).get("teams/").status_code == 200
    token = AccessToken.objects.get(token_hash=AccessToken.hash_secret(secret))
    tokens.token_revoke(token=token, actor=personas.developer)
    problem(ApiClient(secret).get("teams/"), 401)
    expired = make_token(personas.developer, "read")
    AccessToken.objects.filter(token_hash=AccessToken.hash_secret(expired)).update(
        expires_at=timezone.now() - timedelta(seconds=1))
    problem(ApiClient(expired).get("teams/"), 401)


def test_a_token_is_stored_only_as_a_hash_and_its_use_is_noted_and_audited_once_an_hour(personas, make_token):
    secret = make_token(personas.developer, "read")
    token = AccessToken.objects.get()
    assert secret not in str(AccessToken.objects.values().get()) and token.hint == secret[:12]
    assert token.last_used_at is None
    for _ in range(3):
        assert ApiClient(secret).get("teams/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_ip == "127.0.0.1"
    uses = AuditEvent.objects.filter(action="api_token.use")
    assert uses.count() == 1 and uses.get().actor == personas.developer


def test_a_deactivated_user_s_token_stops_working(personas, make_token):
    secret = make_token(personas.developer, "read")
    personas.developer.is_active = False
    personas.developer.save()
    problem(ApiClient(secret).get("teams/"), 401)


# --- Scopes and roles ------------------------------------------------------------------------------------------------


def test_a_missing_scope_is_a_403_that_names_it(personas, api_as):
    body = problem(api_as(personas.admin, "read").post(f"teams/{personas.team.slug}/members/",
                                                        {"username": "outsider", "role": "viewer"}), 403)
    assert body["missing_scope"] == "admin" and "'admin'" in body["detail"]
    assert not Membership.objects.filter(team=personas.team, user=personas.outsider).exists()


@pytest.mark.parametrize("who, status", [("anonymous", 401), ("outsider", 404), ("viewer", 403), ("developer", 403),
                                         ("admin", 201)])
def test_adding_a_member_needs_the_team_admin_role(personas, api_as, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    response = api_as(user, "read", "admin").post(f"teams/{personas.team.slug}/members/",
                                                  {"username": "helpdesk", "role": "viewer"})
    problem(response, status) if status != 201 else None
    assert Membership.objects.filter(team=personas.team, user=personas.helpdesk).exists() == (status == 201)
    if status == 201:
        assert response.json() == {"username": "helpdesk", "name": "", "role": "viewer",
                                   "since": response.json()["since"]}


def test_members_are_listed_changed_and_removed_like_on_the_team_page(personas, api_as):
    api = api_as(personas.admin, "read", "admin")
    listing = api.get(f"teams/{personas.team.slug}/members/", {"role": "approver"}).json()
    assert {m["username"] for m in listing["items"]} == {"approver", "approver2"}
    changed = api.patch(f"teams/{personas.team.slug}/members/viewer/", {"role": "developer"})
    assert changed.status_code == 200 and changed.json()["role"] == "developer"
    assert api.delete(f"teams/{personas.team.slug}/members/viewer/").status_code == 204
    assert not Membership.objects.filter(team=personas.team, user=personas.viewer).exists()
    assert AuditEvent.objects.filter(action="membership.remove", actor=personas.admin).exists()
    body = problem(api.patch(f"teams/{personas.team.slug}/members/teamadmin/", {"role": "viewer"}), 403)
    assert "last admin" in body["detail"]


def test_another_team_is_a_404_exactly_like_a_missing_one(personas, api_as):
    api = api_as(personas.outsider)
    missing = problem(api.get("teams/no-such-team/"), 404)
    other = problem(api.get(f"teams/{personas.team.slug}/"), 404)
    assert {k: v for k, v in missing.items() if k != "instance"} == {k: v for k, v in other.items() if k != "instance"}
    problem(api.get(f"teams/{personas.team.slug}/members/"), 404)
    assert [t["slug"] for t in api.get("teams/").json()["items"]] == [personas.other_team.slug]


def test_only_portal_admins_create_teams(personas, api_as):
    problem(api_as(personas.admin, "admin").post("teams/", {"name": "New"}), 403)
    created = api_as(personas.superuser, "admin").post("teams/", {"name": "New", "description": "made by a script"})
    assert created.status_code == 201 and created.json()["slug"] == "new"
    problem(api_as(personas.superuser, "admin").post("teams/", {"name": "New"}), 409)


# --- Bad input -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"username": "helpdesk", "role": "boss"}, "body.role"),
    ({"username": "helpdesk"}, "body.role"),
    ({"username": 7, "role": "viewer"}, "body.username"),
    ({"username": "helpdesk", "role": "viewer", "admin": True}, "body.admin"),
    ({"username": "nobody-by-that-name", "role": "viewer"}, "body.username"),
    ("not json", "body"),
    ("[1, 2]", "body"),
])
def test_a_bad_body_is_a_400_that_names_the_field(personas, api_as, body, field):
    response = api_as(personas.admin, "read", "admin").post(f"teams/{personas.team.slug}/members/", body)
    found = problem(response, 400)
    assert found["errors"][0]["field"] == field and found["detail"].startswith(field)
    assert not Membership.objects.filter(team=personas.team, user=personas.helpdesk).exists()


def test_a_bad_query_parameter_is_a_400_that_names_it(personas, api_as):
    api = api_as(personas.developer)
    assert problem(api.get("teams/", {"limit": "many"}), 400)["errors"][0]["field"] == "query.limit"
    assert problem(api.get("teams/", {"limit": 0}), 400)["errors"][0]["field"] == "query.limit"
    assert problem(api.get("teams/", {"cursor": "%%%"}), 400)["errors"][0]["field"] == "query.cursor"


# --- Reads: ETags and pagination -------------------------------------------------------------------------------------


def test_reads_carry_an_etag_and_answer_304_while_nothing_changed(personas, api_as):
    api = api_as(personas.admin)
    first = api.get(f"teams/{personas.team.slug}/")
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('"')
    again = api.get(f"teams/{personas.team.slug}/", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again["ETag"] == etag and again.content == b""
    personas.team.description = "changed"
    personas.team.save()
    assert api.get(f"teams/{personas.team.slug}/", HTTP_IF_NONE_MATCH=etag).status_code == 200


def test_lists_are_paged_by_cursor_without_gaps_or_repeats(personas, api_as):
    for n in range(5):
        services.team_create(name=f"Extra {n}", actor=None)
    api = api_as(personas.superuser)
    seen, cursor = [], None
    while True:
        page = api.get("teams/", {"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [team["slug"] for team in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(t.slug for t in type(personas.team).objects.all()) and len(seen) == len(set(seen))


def test_over_the_rate_limit_is_a_429_with_retry_after(personas, make_token, settings):
    settings.API_RATE_LIMIT_PER_TOKEN = "2/m"
    api = ApiClient(make_token(personas.developer, "read"))
    assert [api.get("teams/").status_code for _ in range(2)] == [200, 200]
    response = api.get("teams/")
    body = problem(response, 429)
    assert int(response["Retry-After"]) >= 1 and body["retry_after"] == int(response["Retry-After"])


# --- Team tokens -----------------------------------------------------------------------------------------------------


def test_a_team_token_acts_in_its_team_only_with_the_role_its_scopes_need(personas, make_token):
    secret = make_token(personas.admin, "read", "build", team=personas.team)
    token = AccessToken.objects.get(team=personas.team)
    assert Membership.objects.get(user=token.user).role == Role.DEVELOPER and not token.user.has_usable_password()
    api = ApiClient(secret)
    assert [t["slug"] for t in api.get("teams/").json()["items"]] == [personas.team.slug]
    problem(api.get(f"teams/{personas.other_team.slug}/"), 404)
    tokens.token_revoke(token=token, actor=personas.admin)
    problem(api.get("teams/"), 401)
    assert not Membership.objects.filter(user=token.user).exists()


def test_a_team_tokens_own_user_is_no_one_to_list_ask_or_tell(personas, make_token, api_as, client_for):
    make_token(personas.admin, "read", "build", team=personas.team)
    bot = AccessToken.objects.get(team=personas.team).user
    people = set(Membership.objects.filter(team=personas.team).exclude(user=bot).values_list("user__username", flat=True))
    listed = {m["username"] for m in api_as(personas.admin, "read").get(f"teams/{personas.team.slug}/members/").json()["items"]}
    assert listed == people and bot.username not in listed
    page = client_for(personas.admin).get(reverse("portal:team_detail", args=[personas.team.slug])).content.decode()
    assert bot.username not in page and bot.first_name not in page
    listing = client_for(personas.admin).get(reverse("portal:team_list")).content.decode()
    assert f"{len(people)} members" in listing
    assert bot not in notifications.members_with(personas.team, Action.DEVELOP)
    assert personas.developer in notifications.members_with(personas.team, Action.DEVELOP)


@pytest.mark.parametrize("scopes, message", [(["approve"], "person"), (["admin"], "person"),
                                             (["build", "operate"], "one role")])
def test_a_team_token_never_approves_or_administers_and_has_one_role(personas, scopes, message):
    with pytest.raises(ValidationError, match=message):
        tokens.token_create(actor=personas.admin, name="ci", scopes=scopes, team=personas.team)


def test_only_a_team_admin_makes_a_team_token(personas):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        tokens.token_create(actor=personas.developer, name="ci", scopes=["read"], team=personas.team)


# --- Second factor ---------------------------------------------------------------------------------------------------


def test_where_a_team_requires_a_second_factor_an_approve_token_needs_one_and_expires_sooner(personas, settings):
    personas.team.require_two_factor = True
    personas.team.save()
    with pytest.raises(ValidationError, match="second factor"):
        tokens.token_create(actor=personas.approver, name="ci", scopes=["read", "approve"])
    token, _ = tokens.token_create(actor=personas.approver, name="ci", scopes=["read", "approve"], verified=True)
    assert token.two_factor
    assert token.expires_at <= timezone.now() + timedelta(hours=settings.API_TOKEN_APPROVE_MAX_HOURS)
    # Tokens without approve are not held to it.
    tokens.token_create(actor=personas.approver, name="read-only", scopes=["read"])


# --- The caller's tokens ---------------------------------------------------------------------------------------------


def test_a_token_lists_its_owner_s_tokens_and_can_revoke_itself(personas, make_token):
    make_token(personas.developer, "read")
    secret = make_token(personas.developer, "read", "build")
    api = ApiClient(secret)
    listing = api.get("tokens/").json()["items"]
    assert len(listing) == 2 and all("hash" not in str(item) and secret not in str(item) for item in listing)
    mine = AccessToken.objects.get(token_hash=AccessToken.hash_secret(secret))
    problem(api.delete("tokens/999999/"), 404)
    other = tokens.token_create(actor=personas.viewer, name="v", scopes=["read"])[0]
    problem(api.delete(f"tokens/{other.pk}/"), 404)
    assert api.delete(f"tokens/{mine.pk}/").status_code == 204
    problem(api.get("tokens/"), 401)


# --- The tokens pages ------------------------------------------------------------------------------------------------


def test_the_tokens_page_shows_a_new_token_once_and_revokes(personas, client_for):
    url = reverse("portal:api_tokens")
    assert client_for(None).get(url).status_code == 302
    browser = client_for(personas.developer)
    assert browser.get(url).status_code == 200
    made = browser.post(url, {"name": "laptop", "scopes": ["read", "build"], "expires_in_days": 7})
    token = AccessToken.objects.get(user=personas.developer)
    secret = made.context["new_secret"]
    assert made.status_code == 200 and secret.startswith("impt_") and secret.encode() in made.content
    assert secret.encode() not in browser.get(url).content  # shown once
    assert ApiClient(secret).get("teams/").status_code == 200
    problem(ApiClient(secret).post(f"teams/{personas.team.slug}/members/", {"username": "x", "role": "viewer"}), 403)
    # Somebody else's token does not exist for this user.
    assert client_for(personas.viewer).post(reverse("portal:api_token_revoke", args=[token.pk])).status_code == 404
    browser.post(reverse("portal:api_token_revoke", args=[token.pk]))
    token.refresh_from_db()
    assert token.state() == "revoked"


def test_a_bad_token_form_says_what_to_fix(personas, client_for):
    response = client_for(personas.developer).post(reverse("portal:api_tokens"), {"name": "", "scopes": ["root"]})
    assert response.status_code == 400 and not AccessToken.objects.exists()
    assert b"This field is required" in response.content and b"not one of the available choices" in response.content


@pytest.mark.parametrize("who, status", [("anonymous", 302), ("outsider", 404), ("viewer", 403), ("developer", 403),
                                         ("admin", 200)])
def test_the_team_tokens_page_is_for_team_admins(personas, client_for, who, status):
    user = None if who == "anonymous" else getattr(personas, who)
    url = reverse("portal:team_api_tokens", args=[personas.team.slug])
    assert client_for(user).get(url).status_code == status
    client_for(user).post(url, {"name": "ci", "scopes": ["read", "build"], "expires_in_days": 30})
    assert AccessToken.objects.filter(team=personas.team).exists() == (status == 200)


# --- Schema and docs -------------------------------------------------------------------------------------------------


def test_the_schema_is_openapi_3_1_and_the_docs_page_loads_it_from_vendored_files():
    schema = Client().get("/api/v1/openapi.json")
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.1")
    page = Client().get(reverse("portal:api_docs"))
    assert page.status_code == 200
    assert b"/static/vendor/swagger-ui/swagger-ui-bundle.js" in page.content and b"/static/portal/api-docs.js" in page.content
    # Nothing inline and nothing from another origin (a CDN's script or style); "cdn" as such may be in the page's
    # random tokens.
    assert b"<script>" not in page.content
    assert not re.search(rb'(src|href)="(https?:)?//', page.content), page.content


def test_a_nul_character_anywhere_is_a_400_naming_where(personas, api_as):
    api = api_as(personas.admin, "read", "admin")
    assert problem(api.get("teams/", {"q": "a\x00b"}), 400)["errors"][0]["field"] == "query.q"
    assert problem(api.get("teams/plat%00form/"), 400)["errors"][0]["field"] == "path"
    body = problem(api.post(f"teams/{personas.team.slug}/members/", '{"username": "a\\u0000", "role": "viewer"}'), 400)
    assert body["errors"][0]["field"] == "body"


def test_a_path_the_api_does_not_have_is_a_404_problem(personas, api_as):
    api = api_as(personas.developer)
    assert problem(api.get("no-such-thing/"), 404)["detail"].startswith("No such path")
    assert problem(api.get("builds/not-a-number/"), 400)["errors"][0]["field"] == "path.build_id"
    assert problem(api.post("builds/1/no-such-action/\n/"), 404)["detail"].startswith("No such path")
