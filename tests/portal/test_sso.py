"""Single sign-on (portal.sso, docs/sso.md) against a real OpenID Connect provider on loopback (django-oauth-toolkit in
its own process, tests/oidc_provider): the first sign-in makes the account, the provider's groups become teams and
roles (from the settings and from the admin site), group changes apply at the next sign-in and are audited, a local
account is never taken over, the provider's failures are messages on the login page, and the local break-glass admin
signs in while the provider is down."""

import pytest
from django.test import Client

from portal import environment
from portal.models import AuditEvent, IdentityGroupMapping, Membership, Role, User
from tests.portal.sso_fixtures import sign_in_through

pytestmark = pytest.mark.django_db


def roles_of(username):
    return dict(Membership.objects.filter(user__username=username).values_list("team__slug", "role"))


def messages_on(answer_page):
    return answer_page.content.decode()


# --- The login page --------------------------------------------------------------------------------------------------


def test_the_login_page_offers_the_provider_only_when_it_is_configured(client, settings):
    assert "Sign in with" not in client.get("/login/").content.decode()
    assert client.get("/login/sso/").status_code == 404 and client.get("/login/sso/callback/").status_code == 404
    settings.SSO_ENABLED, settings.SSO_PROVIDER_NAME = True, "Keycloak"
    assert "Sign in with Keycloak" in client.get("/login/").content.decode()


# --- First sign-in, groups, next sign-ins ----------------------------------------------------------------------------


def test_the_first_sign_in_makes_the_user_with_the_role_their_group_maps_to(personas, oidc_provider):
    client = Client()
    answer = sign_in_through(client, oidc_provider, "alice")
    assert answer.status_code == 302
    alice = User.objects.get(username="alice")
    assert alice.oidc_subject and not alice.has_usable_password() and alice.email == "alice@idp.example"
    assert roles_of("alice") == {"platform": Role.APPROVER}
    assert Membership.objects.get(user=alice).from_identity_provider
    assert client.get("/").status_code == 200 and int(client.session["_auth_user_id"]) == alice.pk
    assert AuditEvent.objects.filter(action="sso.user_provision", actor=alice).exists()
    assert AuditEvent.objects.filter(action="auth.login", actor=alice, summary__contains="Test IdP").exists()


def test_group_changes_apply_at_the_next_sign_in_added_changed_and_removed_and_audited(personas, oidc_provider,
                                                                                    settings):
    settings.OIDC_GROUP_MAPPING = [*settings.OIDC_GROUP_MAPPING, ("other-devs", "other", "developer")]
    sign_in_through(Client(), oidc_provider, "alice")
    assert roles_of("alice") == {"platform": Role.APPROVER}
    oidc_provider.set_user("alice", groups=["platform-readers", "other-devs"])
    assert roles_of("alice") == {"platform": Role.APPROVER}  # nothing changes before the next sign-in
    sign_in_through(Client(), oidc_provider, "alice")
    assert roles_of("alice") == {"platform": Role.VIEWER, "other": Role.DEVELOPER}
    oidc_provider.set_user("alice", groups=[])
    sign_in_through(Client(), oidc_provider, "alice")
    assert roles_of("alice") == {}
    applied = list(AuditEvent.objects.filter(action="sso.groups_applied").order_by("seq"))
    assert [e.detail["added"] for e in applied] == [["platform: approver"], ["other: developer"], []]
    assert applied[1].detail["changed"] == ["platform: viewer"]
    assert sorted(applied[2].detail["removed"]) == ["other: developer", "platform: viewer"]
    assert AuditEvent.objects.filter(action="membership.remove", summary__contains="alice").count() == 2


def test_the_strongest_role_wins_and_the_admin_sites_mappings_count_too(personas, oidc_provider):
    IdentityGroupMapping.objects.create(group="ops", team=personas.other_team, role=Role.OPERATOR)
    oidc_provider.set_user("alice", groups=["platform-readers", "platform-approvers", "ops"])
    sign_in_through(Client(), oidc_provider, "alice")
    assert roles_of("alice") == {"platform": Role.APPROVER, "other": Role.OPERATOR}


def test_a_membership_a_team_admin_gave_by_hand_is_left_alone(personas, oidc_provider):
    sign_in_through(Client(), oidc_provider, "alice")
    alice = User.objects.get(username="alice")
    Membership.objects.create(user=alice, team=personas.other_team, role=Role.ADMIN)  # by hand
    oidc_provider.set_user("alice", groups=[])
    sign_in_through(Client(), oidc_provider, "alice")
    assert roles_of("alice") == {"other": Role.ADMIN}


def test_a_provider_account_named_like_a_local_one_never_signs_in_as_it(personas, oidc_provider):
    oidc_provider.set_user("teamadmin", groups=["platform-approvers"])
    client = Client()
    answer = sign_in_through(client, oidc_provider, "teamadmin")
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    page = client.get("/login/")
    assert "A local account named teamadmin exists already" in messages_on(page)
    assert "_auth_user_id" not in client.session
    assert User.objects.get(username="teamadmin").oidc_subject is None
    assert AuditEvent.objects.filter(action="auth.sso_failed").exists()


def test_a_user_with_the_portals_second_factor_is_asked_for_its_code_after_the_provider(personas, oidc_provider):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from portal.twofactor import new_secret

    sign_in_through(Client(), oidc_provider, "alice")
    TOTPDevice.objects.create(user=User.objects.get(username="alice"), key=new_secret(), confirmed=True, name="app")
    client = Client()
    answer = sign_in_through(client, oidc_provider, "alice")
    assert answer["Location"] == "/login/verify/" and "_auth_user_id" not in client.session


# --- The provider's failures -----------------------------------------------------------------------------------------


def test_a_wrong_password_at_the_provider_signs_nobody_in(personas, oidc_provider):
    import requests

    client = Client()
    start = client.get("/login/sso/")
    browser = requests.Session()
    page = browser.get(start["Location"], timeout=10)
    again = browser.post(page.url, data={"username": "alice", "password": "wrong",
                                         "csrfmiddlewaretoken": browser.cookies["provider_csrftoken"]}, timeout=10)
    assert "Wrong user name or password" in again.text and not User.objects.filter(username="alice").exists()


def test_an_error_answer_from_the_provider_is_a_message_not_a_500(personas, oidc_provider):
    client = Client()
    client.get("/login/sso/")
    state = next(iter(client.session["oidc_states"]))
    answer = client.get("/login/sso/callback/", {"error": "access_denied", "error_description": "User cancelled",
                                                  "state": state})
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    assert "Test IdP answered: User cancelled." in messages_on(client.get("/login/"))


def test_a_forged_or_replayed_callback_is_refused_with_a_message(personas, oidc_provider):
    client = Client()
    answer = client.get("/login/sso/callback/", {"code": "made-up", "state": "made-up"})
    assert answer.status_code == 302 and "not started here" in messages_on(client.get("/login/"))


def test_a_code_the_provider_does_not_know_is_a_message_not_a_500(personas, oidc_provider):
    client = Client()
    client.get("/login/sso/")
    state = next(iter(client.session["oidc_states"]))
    answer = client.get("/login/sso/callback/", {"code": "not-a-real-code", "state": state})
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    assert "did not answer as expected" in messages_on(client.get("/login/"))
    assert "_auth_user_id" not in client.session


def test_with_the_provider_stopped_the_button_says_so_and_the_break_glass_admin_signs_in(personas, oidc_provider):
    oidc_provider.stop()
    client = Client()
    answer = client.get("/login/sso/")
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    page = client.get("/login/").content.decode()
    assert "Test IdP does not answer right now" in page and "Local accounts can still sign in" in page
    signed_in = client.post("/login/", {"username": "root", "password": "correct horse battery"})
    assert signed_in.status_code == 302 and client.get("/teams/").status_code == 200
    assert int(client.session["_auth_user_id"]) == personas.superuser.pk


def test_the_provider_stopping_mid_sign_in_is_a_message(personas, oidc_provider):
    import requests

    client = Client()
    start = client.get("/login/sso/")
    browser = requests.Session()
    page = browser.get(start["Location"], timeout=10)
    answer = browser.post(page.url, data={"username": "alice", "password": "provider password 1",
                                          "csrfmiddlewaretoken": browser.cookies["provider_csrftoken"]},
                          timeout=10, allow_redirects=False)
    answer = browser.get(answer.headers["Location"] if answer.headers["Location"].startswith("http")
                         else oidc_provider.url + answer.headers["Location"], allow_redirects=False, timeout=10)
    callback = answer.headers["Location"]
    oidc_provider.stop()  # the code is in hand; the token endpoint is gone
    answer = client.get(callback.removeprefix("http://testserver"))
    assert answer.status_code == 302 and answer["Location"] == "/login/"
    assert "did not answer as expected" in messages_on(client.get("/login/"))


# --- Settings --------------------------------------------------------------------------------------------------------


def test_the_group_mapping_setting_is_read_and_bad_values_are_named():
    assert environment.oidc_group_mapping('{"devs": {"platform": "developer", "edge": "viewer"}}') == [
        ("devs", "platform", "developer"), ("devs", "edge", "viewer")]
    assert environment.oidc_group_mapping("") == []
    for bad, named in [("{not json", "not JSON"), ('{"devs": "platform"}', "must map each group"),
                       ('{"devs": {"platform": "boss"}}', "the role 'boss'")]:
        with pytest.raises(environment.BadSetting, match=named):
            environment.oidc_group_mapping(bad)
    assert list(environment.ROLE_NAMES) == list(Role.values)


def test_half_configured_single_sign_on_stops_start_up_naming_what_is_missing():
    class Env(environment.Env):
        def __init__(self, values):
            super().__init__()
            self.values = values

        def get_value(self, var, cast=None, default=environment.environ.Env.NOTSET, parse_default=False):
            return self.values.get(var, default)

    assert environment.oidc_settings(Env({})) == {}
    with pytest.raises(environment.BadSetting, match="OIDC_OP_TOKEN_ENDPOINT"):
        environment.oidc_settings(Env({"OIDC_RP_CLIENT_ID": "portal", "OIDC_RP_CLIENT_SECRET": "s",
                                       "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://idp/auth",
                                       "OIDC_OP_USER_ENDPOINT": "https://idp/userinfo",
                                       "OIDC_OP_JWKS_ENDPOINT": "https://idp/jwks"}))
