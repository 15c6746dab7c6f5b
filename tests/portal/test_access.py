"""Who may see and do what: the role table, and every core view for anonymous, outsider, read-only and allowed users."""

import re

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext

from portal import services, tokens
from portal.access import can, get_run_for_user, get_team_for_user
from portal.models import Action, AuditEvent, Membership, Role, RunKind, RunStatus
from tests.plugins.personas import make_team

pytestmark = pytest.mark.django_db


def make_run(team, kind=RunKind.BUILD, **kwargs):
    return services.run_create(kind=kind, title="demo run", team=team, **kwargs)


class TestRoleTable:
    def test_each_role_may_do_exactly_its_actions(self, personas):
        team = personas.team
        expected = {
            personas.viewer: {Action.VIEW},
            personas.developer: {Action.VIEW, Action.DEVELOP},
            personas.approver: {Action.VIEW, Action.DEVELOP, Action.APPROVE},
            personas.operator: {Action.VIEW, Action.OPERATE},
            personas.admin: set(Action),
            personas.superuser: set(Action),
            personas.outsider: set(),
            personas.helpdesk: set(),
        }
        for user, actions in expected.items():
            assert {a for a in Action if can(user, team, a)} == actions, user.username

    def test_helpdesk_may_only_read_what_is_marked_helpdesk_readable(self, personas):
        assert can(personas.helpdesk, personas.team, Action.VIEW, helpdesk_readable=True)
        assert not can(personas.helpdesk, personas.team, Action.OPERATE, helpdesk_readable=True)

    def test_a_user_has_a_role_per_team(self, personas):
        Membership.objects.create(team=personas.other_team, user=personas.viewer, role=Role.ADMIN)
        assert can(personas.viewer, personas.other_team, Action.ADMIN)
        assert not can(personas.viewer, personas.team, Action.DEVELOP)

    def test_inactive_users_may_do_nothing(self, personas):
        personas.admin.is_active = False
        assert not can(personas.admin, personas.team, Action.VIEW)


class TestAccessHelpers:
    def test_objects_outside_the_users_teams_are_404(self, personas):
        with pytest.raises(Http404):
            get_team_for_user(personas.outsider, personas.team.slug)

    def test_a_role_that_may_see_but_not_act_gets_403(self, personas):
        with pytest.raises(PermissionDenied):
            get_team_for_user(personas.viewer, personas.team.slug, action=Action.ADMIN)

    def test_missing_and_foreign_runs_look_the_same(self, personas):
        run = make_run(personas.team)
        with pytest.raises(Http404):
            get_run_for_user(personas.outsider, run.pk)
        with pytest.raises(Http404):
            get_run_for_user(personas.outsider, 999999)
        with pytest.raises(Http404):
            get_run_for_user(personas.outsider, "not-a-number")

    def test_forgetting_roles_works_through_the_lazy_user_of_a_request(self, personas):
        from django.utils.functional import SimpleLazyObject

        from portal.access import forget_roles, role_in

        viewer = personas.viewer
        user = SimpleLazyObject(lambda: viewer)
        assert role_in(user, personas.other_team) is None  # read and cached
        Membership.objects.create(team=personas.other_team, user=viewer, role=Role.OPERATOR)
        forget_roles(user)
        assert role_in(user, personas.other_team) == Role.OPERATOR

    def test_helpdesk_reads_host_runs_of_every_team_but_not_builds(self, personas):
        host_run = make_run(personas.team, kind=RunKind.HOST_ACTION)
        build_run = make_run(personas.team, kind=RunKind.BUILD)
        assert get_run_for_user(personas.helpdesk, host_run.pk) == host_run
        with pytest.raises(PermissionDenied):
            get_run_for_user(personas.helpdesk, host_run.pk, action=Action.OPERATE)
        with pytest.raises(Http404):
            get_run_for_user(personas.helpdesk, build_run.pk)


# --- Every core view, four ways --------------------------------------------------------------------------------------

ANON = "anonymous"


def expect(client_for, user, method, url, status, data=None, headers=None):
    response = getattr(client_for(user), method)(url, data or {}, headers=headers)
    if status == "login":
        assert response.status_code == 302 and response["Location"].startswith("/login/"), (url, response.status_code)
    else:
        assert response.status_code == status, (user, method, url, response.status_code)
    return response


class TestTeamViews:
    def test_team_page(self, personas, client_for):
        url = f"/teams/{personas.team.slug}/"
        expect(client_for, None, "get", url, "login")
        expect(client_for, personas.outsider, "get", url, 404)
        expect(client_for, personas.viewer, "get", url, 200)
        response = expect(client_for, personas.admin, "get", url, 200)
        assert b"Add member" in response.content

    def test_viewers_do_not_get_the_member_controls(self, personas, client_for):
        response = expect(client_for, personas.viewer, "get", f"/teams/{personas.team.slug}/", 200)
        assert b"Add member" not in response.content

    def test_adding_a_member(self, personas, client_for):
        url = f"/teams/{personas.team.slug}/members/"
        data = {"user": personas.outsider.username, "role": "viewer"}
        expect(client_for, None, "post", url, "login", data)
        expect(client_for, personas.outsider, "post", url, 404, data)
        expect(client_for, personas.viewer, "post", url, 403, data)
        expect(client_for, personas.developer, "post", url, 403, data)
        assert not Membership.objects.filter(team=personas.team, user=personas.outsider).exists()
        expect(client_for, personas.admin, "post", url, 302, data)
        assert Membership.objects.get(team=personas.team, user=personas.outsider).role == "viewer"

    def test_adding_by_email(self, personas, client_for):
        expect(client_for, personas.admin, "post", f"/teams/{personas.team.slug}/members/", 302,
               {"user": "OUTSIDER@example.com", "role": "developer"})
        assert Membership.objects.get(team=personas.team, user=personas.outsider).role == "developer"

    def test_changing_a_role(self, personas, client_for):
        url = f"/teams/{personas.team.slug}/members/{personas.viewer.pk}/role/"
        expect(client_for, None, "post", url, "login", {"role": "operator"})
        expect(client_for, personas.outsider, "post", url, 404, {"role": "operator"})
        expect(client_for, personas.viewer, "post", url, 403, {"role": "operator"})
        expect(client_for, personas.admin, "post", url, 302, {"role": "operator"})
        assert Membership.objects.get(team=personas.team, user=personas.viewer).role == "operator"

    def test_removing_a_member(self, personas, client_for):
        url = f"/teams/{personas.team.slug}/members/{personas.viewer.pk}/remove/"
        expect(client_for, None, "post", url, "login")
        expect(client_for, personas.outsider, "post", url, 404)
        expect(client_for, personas.developer, "post", url, 403)
        expect(client_for, personas.admin, "post", url, 302)
        assert not Membership.objects.filter(team=personas.team, user=personas.viewer).exists()

    def test_membership_changes_are_audited_with_who_what_and_from_where(self, personas, client_for):
        client, base = client_for(personas.admin), f"/teams/{personas.team.slug}/members/"
        client.post(base, {"user": "outsider", "role": "viewer"})
        client.post(f"{base}{personas.outsider.pk}/role/", {"role": "developer"})
        client.post(f"{base}{personas.outsider.pk}/remove/")
        events = AuditEvent.objects.filter(action__startswith="membership.").order_by("seq")
        assert [(e.action, e.actor, e.team, e.detail["user"], e.detail["role"]) for e in events] == [
            ("membership.add", personas.admin, personas.team, "outsider", "viewer"),
            ("membership.role", personas.admin, personas.team, "outsider", "developer"),
            ("membership.remove", personas.admin, personas.team, "outsider", "developer"),
        ]
        assert events[1].detail["previous_role"] == "viewer"
        assert {e.ip_address for e in events} == {"127.0.0.1"}

    def test_the_last_admin_is_neither_removed_nor_demoted_and_a_made_up_role_is_refused(self, personas, client_for):
        client, base = client_for(personas.admin), f"/teams/{personas.team.slug}/members/{personas.admin.pk}/"
        for path, data in (("remove/", {}), ("role/", {"role": "viewer"})):
            response = client.post(base + path, data, follow=True)
            assert response.status_code == 200 and b"is the last admin of Platform" in response.content
        response = client.post(f"/teams/{personas.team.slug}/members/{personas.viewer.pk}/role/", {"role": "god"},
                               follow=True)
        assert b"Pick one of the listed roles" in response.content
        assert Membership.objects.get(team=personas.team, user=personas.admin).role == "admin"
        assert Membership.objects.get(team=personas.team, user=personas.viewer).role == "viewer"
        assert not AuditEvent.objects.filter(action__startswith="membership.").exists()

    def test_member_changes_are_post_only(self, personas, client_for):
        expect(client_for, personas.admin, "get", f"/teams/{personas.team.slug}/members/{personas.viewer.pk}/remove/", 405)

    def test_team_list_shows_only_my_teams(self, personas, client_for):
        expect(client_for, None, "get", "/teams/", "login")
        response = expect(client_for, personas.outsider, "get", "/teams/", 200)
        assert b"Other" in response.content and b"Platform" not in response.content

    def test_only_superusers_create_teams(self, personas, client_for):
        expect(client_for, None, "post", "/teams/new/", "login", {"name": "New"})
        expect(client_for, personas.admin, "post", "/teams/new/", 403, {"name": "New"})
        expect(client_for, personas.superuser, "post", "/teams/new/", 302, {"name": "Security"})
        expect(client_for, personas.superuser, "post", "/teams/new/", 400, {"name": "Security"})
        expect(client_for, personas.superuser, "post", "/teams/new/", 400, {"name": "!!!"})

    def test_a_refused_new_team_shows_the_teams_as_the_list_does_in_as_many_queries_however_many_teams(
            self, personas, client_for):
        tokens.token_create(actor=personas.admin, name="ci", scopes=["read"], team=personas.team)  # not a member
        client = client_for(personas.superuser)

        def teams_shown(content):
            return re.findall(r'fw-semibold">([^<]+)</span>.*?(\d+) members?</span>', content.decode(), re.S)

        def refused():
            with CaptureQueriesContext(connection) as queries:
                response = client.post("/teams/new/", {"name": "!!!"})
            assert response.status_code == 400
            return teams_shown(response.content), len(queries)

        listed = teams_shown(client.get("/teams/").content)  # first, as it notes the session's activity
        shown, queries = refused()
        assert shown == listed == [("Other", "1"), ("Platform", "6")]
        for name in ("Security", "Storage", "Network"):
            make_team(name, admin=personas.admin)
        shown, more_teams_queries = refused()
        assert len(shown) == 5 and more_teams_queries == queries


class TestRunViews:
    @pytest.mark.parametrize("suffix", ["", "log/", "log.txt"])
    def test_reading_a_run(self, personas, client_for, suffix):
        run = make_run(personas.team)
        url = f"/runs/{run.pk}/{suffix}"
        headers = {"HX-Request": "true"} if suffix == "log/" else None  # the log's polled fragment
        expect(client_for, None, "get", url, "login", headers=headers)
        expect(client_for, personas.outsider, "get", url, 404, headers=headers)
        expect(client_for, personas.helpdesk, "get", url, 404, headers=headers)
        expect(client_for, personas.viewer, "get", url, 200, headers=headers)
        expect(client_for, personas.developer, "get", url, 200, headers=headers)

    def test_helpdesk_may_watch_a_host_action(self, personas, client_for):
        run = make_run(personas.team, kind=RunKind.HOST_ACTION)
        expect(client_for, personas.helpdesk, "get", f"/runs/{run.pk}/", 200)

    def test_cancelling_a_run(self, personas, client_for):
        run = make_run(personas.team)
        url = f"/runs/{run.pk}/cancel/"
        expect(client_for, None, "post", url, "login")
        expect(client_for, personas.outsider, "post", url, 404)
        expect(client_for, personas.viewer, "post", url, 403)
        run.refresh_from_db()
        assert run.status == RunStatus.QUEUED
        expect(client_for, personas.developer, "post", url, 302)
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED

    def test_cancelling_goes_back_to_the_page_it_was_asked_from_on_this_site_only(self, personas, client_for):
        client = client_for(personas.developer)
        run, other = make_run(personas.team), make_run(personas.team)
        assert client.post(f"/runs/{run.pk}/cancel/", {"next": "/builds/"})["Location"] == "/builds/"
        assert client.post(f"/runs/{other.pk}/cancel/", {"next": "https://evil.example/"})["Location"] == f"/runs/{other.pk}/"

    def test_retrying_a_run_needs_the_role_its_app_registered(self, personas, client_for):
        run = make_run(personas.team)  # a build's run whose build row is gone
        services.run_finish(run, status=RunStatus.FAILED, reason="boom")
        url = f"/runs/{run.pk}/retry/"
        expect(client_for, None, "post", url, "login")
        expect(client_for, personas.outsider, "post", url, 404)
        expect(client_for, personas.helpdesk, "post", url, 404)
        expect(client_for, personas.viewer, "post", url, 403)
        expect(client_for, personas.operator, "post", url, 403)
        response = client_for(personas.developer).post(url, {"next": "/builds/"}, follow=True)
        assert response.redirect_chain == [("/builds/", 302)] and "has no build to start again" in response.content.decode()

    def test_a_run_no_app_starts_again_has_no_retry(self, personas, client_for):
        run = make_run(personas.team, kind=RunKind.HOST_POLL)
        services.run_finish(run, status=RunStatus.FAILED, reason="unreachable")
        expect(client_for, personas.admin, "post", f"/runs/{run.pk}/retry/", 404)


class TestOtherViews:
    def test_dashboard(self, personas, client_for):
        expect(client_for, None, "get", "/", "login")
        for user in (personas.outsider, personas.viewer, personas.helpdesk, personas.developer):
            expect(client_for, user, "get", "/", 200)

    def test_dashboard_of_a_user_without_teams_explains_what_to_do(self, personas, client_for):
        from tests.plugins.personas import make_user

        response = expect(client_for, make_user("newcomer"), "get", "/", 200)
        assert b"not in any team yet" in response.content

    def test_the_help_desk_dashboard_counts_every_teams_hosts_instead_of_saying_no_team(self, personas, client_for):
        from hosts.services import host_create

        host_create(team=personas.other_team, name="web-01", address="192.0.2.10", actor=None)
        make_run(personas.other_team, kind=RunKind.HOST_ACTION)
        make_run(personas.other_team, kind=RunKind.BUILD)
        page = expect(client_for, personas.helpdesk, "get", "/", 200).content.decode()
        assert "not in any team yet" not in page and 'id="helpdesk-note"' in page
        assert "demo run" in page and page.count("demo run") == 1  # the host action; the build is not theirs to see
        tiles = dict(zip(re.findall(r'tile-label">([^<]+)<', page), re.findall(r'tile-value">(\d+)<', page), strict=True))
        assert tiles == {"Hosts": "1", "Hosts drifting": "0", "Runs in progress": "1"}

    def test_switching_team(self, personas, client_for):
        expect(client_for, None, "post", "/switch-team/", "login", {"team": personas.team.slug})
        expect(client_for, personas.outsider, "post", "/switch-team/", 404, {"team": personas.team.slug})
        client = client_for(personas.viewer)
        response = client.post("/switch-team/", {"team": personas.team.slug, "next": "/audit/"})
        assert response.status_code == 302 and response["Location"] == "/audit/"
        assert client.session["team_id"] == personas.team.pk
        response = client.post("/switch-team/", {"team": "", "next": "https://evil.example/"})
        assert response["Location"] == "/" and "team_id" not in client.session
        for elsewhere in ("//evil.example/", "ok", "javascript:alert(1)"):  # not a path here: the dashboard
            assert client.post("/switch-team/", {"team": "", "next": elsewhere})["Location"] == "/"

    def test_a_team_switch_to_a_slug_that_cannot_exist_is_not_found(self, personas, client_for):
        expect(client_for, personas.viewer, "post", "/switch-team/", 404, {"team": "plat\x00form"})
        expect(client_for, personas.viewer, "post", "/switch-team/", 404, {"team": "x" * 500})

    def test_placeholder_sections_need_login(self, personas, client_for):
        for url in ("/images/", "/builds/", "/promotions/", "/hosts/"):
            expect(client_for, None, "get", url, "login")
            expect(client_for, personas.viewer, "get", url, 200)

    def test_unknown_pages_get_the_friendly_404(self, personas, client_for):
        response = expect(client_for, personas.viewer, "get", "/no/such/page/", 404)
        assert b"Nothing here" in response.content

    def test_403_page_says_why(self, personas, client_for):
        response = expect(client_for, personas.viewer, "post", f"/teams/{personas.team.slug}/members/", 403,
                          {"user": "x", "role": "viewer"})
        assert b"does not allow you to manage members" in response.content


class TestCancellingHostRuns:
    def test_operators_cancel_host_actions_and_developers_do_not(self, personas, client_for):
        run = make_run(personas.team, kind=RunKind.HOST_ACTION)
        url = f"/runs/{run.pk}/cancel/"
        expect(client_for, personas.helpdesk, "post", url, 403)
        expect(client_for, personas.developer, "post", url, 403)
        expect(client_for, personas.operator, "post", url, 302)
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED

    def test_the_cancel_button_shows_for_whoever_may_cancel(self, personas, client_for):
        run = make_run(personas.team, kind=RunKind.HOST_ACTION)
        assert b"run-cancel" in client_for(personas.operator).get(f"/runs/{run.pk}/").content
        assert b"run-cancel" not in client_for(personas.developer).get(f"/runs/{run.pk}/").content

    def test_a_running_host_action_runs_to_its_end(self, personas, client_for):
        run = make_run(personas.team, kind=RunKind.HOST_ACTION)
        services.run_start(run)
        client = client_for(personas.operator)
        assert b"run-cancel" not in client.get(f"/runs/{run.pk}/").content
        response = client.post(f"/runs/{run.pk}/cancel/", follow=True)
        assert b"runs to its end" in response.content
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING and run.cancel_requested_at is None



class TestCancellingKeyRotations:
    """A key rotation is a team admin's to start and to resume (the supply chain registers who may cancel it)."""

    def test_team_admins_cancel_a_key_rotation_and_no_other_member_does(self, personas, client_for):
        run = make_run(personas.team, kind=RunKind.KEY_ROTATION)
        url = f"/runs/{run.pk}/cancel/"
        expect(client_for, None, "post", url, "login")
        expect(client_for, personas.outsider, "post", url, 404)
        for member in (personas.viewer, personas.developer, personas.approver, personas.operator):
            expect(client_for, member, "post", url, 403)
        run.refresh_from_db()
        assert run.status == RunStatus.QUEUED
        assert b"run-cancel" not in client_for(personas.developer).get(f"/runs/{run.pk}/").content
        assert b"run-cancel" in client_for(personas.admin).get(f"/runs/{run.pk}/").content
        expect(client_for, personas.admin, "post", url, 302)
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED

    def test_through_the_api_too(self, personas, api_as):
        run = make_run(personas.team, kind=RunKind.KEY_ROTATION)
        assert api_as(None).post(f"runs/{run.pk}/cancel/").status_code == 401
        assert api_as(personas.outsider, "read", "build").post(f"runs/{run.pk}/cancel/").status_code == 404
        assert api_as(personas.developer, "read", "build").post(f"runs/{run.pk}/cancel/").status_code == 403
        assert api_as(personas.admin, "read", "build").post(f"runs/{run.pk}/cancel/").status_code == 200
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED

# --- Every URL of the portal, anonymous ------------------------------------------------------------------------------

# What may answer without a login: the login itself and its second step (which sends anyone without a password just
# accepted back to the first: tests/portal/test_two_factor.py), logging out, the health check, Prometheus's scrape
# (its own token or network: tests/portal/test_metrics.py), and the machine endpoints, which authenticate with their
# own token or signature (tests/builds/test_remote.py and the API's tests cover those).
# hosts:agent_enroll is a door too: whoever holds an enrollment token may knock (tests/hosts/test_reportin.py). And
# supplychain:lookaside serves image signatures to hosts, which have no login: only signature files, by the exact
# repository@digest path containers/image asks for (tests/supplychain/). The REST API's schema and its docs page show
# only the API's shape; every call of the API itself (the "api" namespace) is a machine endpoint (tests/api/).
# Single sign-on's button and callback are part of logging in (404 while it is not configured; tests/portal/test_sso.py).
PUBLIC = {"portal:login", "portal:login_verify", "portal:sso_start", "portal:sso_callback", "portal:logout",
          "portal:health", "portal:health_live", "portal:health_ready", "portal:metrics", "hosts:agent_enroll",
          "supplychain:lookaside", "portal:api_docs", "api:openapi-json"}
MACHINE = {"builds:api_build_create", "builds:api_build_detail", "builds:api_definition_list", "builds:git_webhook",
           "hosts:agent_status", "hosts:agent_action_next", "hosts:agent_action_log", "hosts:agent_action_finish",
           "hosts:agent_runtime"}


def every_named_url():
    """[(name, path)] of every named URL outside the Django admin, with a sample value for each argument."""
    from django.urls import URLPattern, URLResolver, get_resolver, reverse
    from django.urls.converters import IntConverter, SlugConverter

    def sample(name, converter):
        if name == "digest":
            return "sha256:" + "0" * 64
        if isinstance(converter, IntConverter):
            return 1
        return "platform" if isinstance(converter, SlugConverter) else "x"

    found = []

    def walk(patterns, namespace=""):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.app_name != "admin":
                    walk(entry.url_patterns, f"{namespace}{entry.namespace}:" if entry.namespace else namespace)
            elif isinstance(entry, URLPattern) and entry.name:
                converters = getattr(entry.pattern, "converters", {})
                names = converters or entry.pattern.regex.groupindex
                kwargs = {name: sample(name, converters.get(name)) for name in names}
                found.append((namespace + entry.name, reverse(namespace + entry.name, kwargs=kwargs)))

    walk(get_resolver().url_patterns)
    return found


class TestEveryUrl:
    def test_the_sweep_sees_the_whole_portal(self):
        names = {name for name, _ in every_named_url()}
        assert {"portal:dashboard", "portal:run_log_search", "builds:build_detail", "hosts:host_action",
                "releases:promotion_approve", "diskimages:detail", "portal:audit_list"} <= names and len(names) > 90

    @pytest.mark.parametrize("name,path", every_named_url())
    def test_anonymous_users_are_sent_to_log_in_everywhere_but_the_public_doors(self, db, client_for, name, path):
        client = client_for(None)
        for method in ("get", "post"):
            response = getattr(client, method)(path)
            assert response.status_code != 500, (method, path)
            if name in PUBLIC:
                continue
            if name in MACHINE or name.startswith("api:"):
                assert response.status_code in (401, 403, 404, 405), (method, path, response.status_code)
                continue
            assert response.status_code == 302 and response["Location"].startswith("/login/?next="), (
                method, path, response.status_code)
