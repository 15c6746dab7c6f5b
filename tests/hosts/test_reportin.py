"""Hosts that report in: enrollment with a token, an admin's approval, status reports (unchanged ones cost a hash
compare and a batched last-seen mark; changed ones go through the poller's parser, snapshots and timeline), refusals,
and actions the agent carries out. Real PostgreSQL and Redis; the agent is HTTP requests through the test client."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts import reportin
from hosts.actions import host_action_request
from hosts.models import ActionKind, EnrollmentToken, EventKind, Host, HostMode, HostRuntime, HostSnapshot, HostState
from portal.logsink import lines_after
from portal.models import AuditEvent, RunStatus
from tests.hosts.reportin_fixtures import Agent, make_token, status_json

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(personas):
    """An enrolled, approved host and its agent."""
    _, secret = make_token(personas, pre_approved=True)
    agent = Agent()
    assert agent.enroll(secret).status_code == 201
    return Host.objects.get(team=personas.team, name="edge-01"), agent


class TestEnrollment:
    def test_a_token_enrolls_one_host_which_waits_for_approval(self, personas):
        token, secret = make_token(personas, stage=personas.team.stages.get(name="prod"), labels="edge  shop=12")
        response = Agent().enroll(secret, name="edge-01")
        assert response.status_code == 201 and response.json()["approved"] is False
        host = Host.objects.get(team=personas.team, name="edge-01")
        assert host.mode == HostMode.REPORT and host.pending_approval and not host.trusted
        assert host.stage.name == "prod" and host.labels == "edge shop=12" and host.enrolled_with == token
        assert host.agent_secret_hash == reportin.secret_hash(response.json()["credential"])
        assert response.json()["credential"] not in str(Host.objects.filter(pk=host.pk).values().first())
        assert AuditEvent.objects.filter(action="hosts.enroll", object_id=str(host.pk)).exists()

    def test_tokens_are_stored_hashed(self, personas):
        token, secret = make_token(personas)
        assert token.token_hash == EnrollmentToken.hash_secret(secret) and secret not in str(
            EnrollmentToken.objects.filter(pk=token.pk).values().first())

    def test_a_used_token_is_refused_and_the_attempt_audited(self, personas):
        _, secret = make_token(personas, uses=1)
        assert Agent().enroll(secret, name="edge-01").status_code == 201
        response = Agent().enroll(secret, name="edge-02")
        assert response.status_code == 403 and "already used" in response.json()["error"]
        assert not Host.objects.filter(name="edge-02").exists()
        refused = AuditEvent.objects.filter(action="hosts.enroll_refused").latest("seq")
        assert "already used" in refused.summary and refused.team == personas.team and secret not in str(refused.detail)

    def test_an_n_use_token_enrolls_n_hosts(self, personas):
        token, secret = make_token(personas, uses=3)
        assert [Agent().enroll(secret, name=f"edge-{i}").status_code for i in range(4)] == [201, 201, 201, 403]
        token.refresh_from_db()
        assert token.uses == 3

    def test_an_expired_token_is_refused(self, personas):
        token, secret = make_token(personas)
        EnrollmentToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        response = Agent().enroll(secret)
        assert response.status_code == 403 and "expired" in response.json()["error"]
        assert AuditEvent.objects.filter(action="hosts.enroll_refused", summary__contains="expired").exists()

    def test_a_revoked_token_is_refused(self, personas):
        token, secret = make_token(personas)
        reportin.enrollment_token_revoke(token=token, user=personas.admin)
        assert Agent().enroll(secret).status_code == 403

    def test_an_unknown_token_is_refused_and_audited(self, personas):
        response = Agent().enroll("ime_" + "x" * 43)
        assert response.status_code == 401 and "not known" in response.json()["error"]
        assert AuditEvent.objects.filter(action="hosts.enroll_refused", summary__contains="not known").exists()

    def test_a_name_taken_in_the_team_is_refused_without_using_the_token(self, personas):
        token, secret = make_token(personas, uses=2)
        Agent().enroll(secret, name="edge-01")
        response = Agent().enroll(secret, name="edge-01")
        assert response.status_code == 409 and "already has a host called edge-01" in response.json()["error"]
        token.refresh_from_db()
        assert token.uses == 1

    def test_bad_enrollment_requests_get_the_reason(self, personas):
        _, secret = make_token(personas)
        agent = Agent()
        assert agent.client.post("/agent/v1/enroll", "not json", content_type="application/json").status_code == 400
        assert agent.enroll(secret, name="has space").status_code == 400
        assert agent.client.get("/agent/v1/enroll").status_code == 405

    def test_only_a_team_admin_makes_tokens(self, personas):
        from django.core.exceptions import PermissionDenied
        from django.http import Http404

        with pytest.raises(PermissionDenied):
            reportin.enrollment_token_create(team=personas.team, user=personas.operator, name="x")
        with pytest.raises(Http404):
            reportin.enrollment_token_create(team=personas.team, user=personas.outsider, name="x")


class TestApproval:
    def test_a_pending_host_cannot_report_until_an_admin_approves_it(self, personas):
        _, secret = make_token(personas)
        agent = Agent()
        agent.enroll(secret)
        response = agent.report(status_json())
        assert response.status_code == 403 and "approval" in response.json()["error"]
        host = Host.objects.get(name="edge-01")
        reportin.host_approve(host=host, user=personas.admin)
        assert agent.report(status_json()).status_code == 200
        host.refresh_from_db()
        assert host.state == HostState.RUNNING and host.approved_by == personas.admin
        assert AuditEvent.objects.filter(action="hosts.approve", object_id=str(host.pk)).exists()

    def test_a_pre_approving_token_lets_the_host_report_at_once(self, approved):
        host, agent = approved
        assert host.trusted and agent.report(status_json()).status_code == 200


class TestReports:
    def test_the_first_report_goes_through_the_parser_and_the_timeline(self, approved):
        host, agent = approved
        response = agent.report(status_json())
        assert response.json() == {"status": "changed", "state": HostState.RUNNING, "actions": 0}
        host.refresh_from_db()
        assert host.booted_digest == "sha256:" + "a" * 64 and host.booted_version == "1.0"
        assert HostSnapshot.objects.filter(host=host).count() == 1
        assert host.events.filter(kind=EventKind.FIRST_SEEN).exists()

    def test_an_unchanged_report_writes_no_snapshot_and_is_seen_in_a_batch(self, approved):
        host, agent = approved
        agent.report(status_json())
        host.refresh_from_db()
        first_seen = host.status_at
        reportin.flush_last_seen()
        assert agent.report(status_json()).json()["status"] == "unchanged"
        assert HostSnapshot.objects.filter(host=host).count() == 1
        reportin.flush_last_seen()
        host.refresh_from_db()
        assert host.status_at > first_seen

    def test_a_changed_report_adds_a_snapshot_and_an_event(self, approved):
        host, agent = approved
        agent.report(status_json())
        assert agent.report(status_json(staged="sha256:" + "b" * 64)).json()["status"] == "changed"
        host.refresh_from_db()
        assert host.staged_digest == "sha256:" + "b" * 64 and host.state == HostState.UPDATE_STAGED
        assert host.events.filter(kind=EventKind.STAGED).exists()
        assert HostSnapshot.objects.filter(host=host).count() == 2

    def test_json_that_is_not_a_bootc_status_is_refused_and_the_host_marked_unreadable(self, approved):
        host, agent = approved
        agent.report(status_json())
        response = agent.report(b'{"kind": "Pod", "spec": {}}')
        assert response.status_code == 422 and "not a BootcHost" in response.json()["error"]
        host.refresh_from_db()
        assert host.state == HostState.UNREADABLE and "not a BootcHost" in host.last_error
        assert host.events.filter(kind=EventKind.UNREADABLE).exists()
        assert agent.report(status_json()).json()["status"] == "changed"  # the next good report is read again
        host.refresh_from_db()
        assert host.state == HostState.RUNNING

    def test_text_that_is_not_json_is_refused(self, approved):
        host, agent = approved
        response = agent.report(b"Segmentation fault")
        assert response.status_code == 422
        host.refresh_from_db()
        assert host.state == HostState.UNREADABLE

    def test_an_oversize_report_is_refused_with_the_cap(self, approved, settings):
        settings.HOSTS_MAX_STATUS_BYTES = 10_000
        host, agent = approved
        response = agent.report(b" " * 10_001)
        assert response.status_code == 413 and "10000 bytes" in response.json()["error"]
        host.refresh_from_db()
        assert host.state == HostState.UNREADABLE and "HOSTS_MAX_STATUS_BYTES" in host.last_error

    def test_an_empty_report_is_refused(self, approved):
        assert approved[1].report(b"").status_code == 400

    def test_a_report_with_another_hosts_credential_changes_only_that_host(self, personas):
        _, secret = make_token(personas, uses=2, pre_approved=True)
        one, two = Agent(), Agent()
        one.enroll(secret, name="edge-01")
        two.enroll(secret, name="edge-02")
        assert one.credential != two.credential
        two.report(status_json(digest="sha256:" + "c" * 64))
        assert Host.objects.get(name="edge-01").state == HostState.NEW
        assert Host.objects.get(name="edge-02").booted_digest == "sha256:" + "c" * 64

    def test_a_report_without_a_known_credential_is_refused(self, approved):
        assert Agent().report(status_json()).status_code == 401
        assert Agent(credential="imh_" + "x" * 43).report(status_json()).status_code == 401
        assert Agent(credential="Basic abc").report(status_json()).status_code == 401

    def test_a_flood_of_reports_from_one_host_is_rate_limited(self, approved, settings):
        settings.HOSTS_AGENT_RATE_LIMIT_PER_HOST = "3/d"
        host, agent = approved
        codes = [agent.report(status_json()).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]

    def test_an_ssh_host_has_no_agent_credential(self, personas):
        Host.objects.create(team=personas.team, name="ssh-01", address="192.0.2.1")
        assert reportin.agent_authenticate("") is None


class TestAgentActions:
    def test_an_action_waits_for_the_agent_which_runs_it_and_posts_its_output(self, approved, personas):
        host, agent = approved
        agent.report(status_json())
        action = host_action_request(host=host, kind=ActionKind.UPGRADE_STAGE, user=personas.operator)
        assert action.run.status == RunStatus.QUEUED  # no worker: the agent asks for it
        assert agent.report(status_json()).json()["actions"] == 1
        taken = agent.next_action().json()
        assert taken == {"action": action.pk, "kind": "upgrade_stage", "image": ""}
        assert agent.next_action().json() == {"action": None}
        assert agent.log(action.pk, "Fetching layers 1/3\nFetching layers 3/3\n").status_code == 200
        assert agent.finish(action.pk, 0, output="Queued for next boot\n").json() == {"status": RunStatus.SUCCEEDED}
        action.refresh_from_db()
        lines = [text for _, text in lines_after(action.run)]
        assert "Fetching layers 3/3" in lines and "Queued for next boot" in lines and not action.active

    def test_a_failed_command_fails_the_run_with_the_exit_status(self, approved, personas):
        host, agent = approved
        agent.report(status_json())
        action = host_action_request(host=host, kind=ActionKind.UPGRADE_STAGE, user=personas.operator)
        agent.next_action()
        assert agent.finish(action.pk, 1, output="error: No space left on device\n").json()["status"] == "failed"
        action.refresh_from_db()
        assert "exit status 1" in action.run.exit_reason and not action.active

    def test_an_agent_cannot_touch_another_hosts_action(self, personas):
        _, secret = make_token(personas, uses=2, pre_approved=True)
        one, two = Agent(), Agent()
        one.enroll(secret, name="edge-01")
        two.enroll(secret, name="edge-02")
        one.report(status_json())
        action = host_action_request(host=Host.objects.get(name="edge-01"), kind=ActionKind.UPGRADE_STAGE,
                                     user=personas.operator)
        assert two.next_action().json() == {"action": None}
        one.next_action()
        assert two.finish(action.pk, 0).status_code == 404
        assert two.log(action.pk, "forged").status_code == 404

    def test_a_pending_host_cannot_be_acted_on(self, personas):
        from hosts.connect import HostError

        _, secret = make_token(personas)
        Agent().enroll(secret)
        with pytest.raises(HostError, match="Approve"):
            host_action_request(host=Host.objects.get(name="edge-01"), kind=ActionKind.REBOOT, user=personas.operator)


def is_login(response):
    return response.status_code == 302 and response["Location"].startswith("/login/")


class TestPagesAndWhoMayUseThem:
    """Anonymous users log in; outsiders get 404; members who may only read (viewer, operator) read the page and get
    403 on every change; help-desk users (no team) see no enrollment page; team admins do everything."""

    def test_the_enrollment_page(self, personas, client_for):
        make_token(personas, name="shop appliances")
        url = f"/teams/{personas.team.slug}/enrollment/"
        assert is_login(client_for(None).get(url))
        assert client_for(personas.outsider).get(url).status_code == 404
        assert client_for(personas.helpdesk).get(url).status_code == 404
        for reader in (personas.viewer, personas.operator):
            page = client_for(reader).get(url)
            assert page.status_code == 200 and "shop appliances" in page.content.decode()
            assert "New enrollment token" not in page.content.decode()
        page = client_for(personas.admin).get(url).content.decode()
        assert "shop appliances" in page and "New enrollment token" in page and "Revoke" in page

    def test_creating_a_token_shows_it_once_with_the_agent_to_install(self, personas, client_for):
        url = f"/teams/{personas.team.slug}/enrollment/"
        data = {"name": "edge batch 3", "uses": "25", "expires_in_hours": "168", "labels": "edge",
                "stage": personas.team.stages.get(name="prod").pk, "pre_approved": ""}
        assert is_login(client_for(None).post(url, data))
        assert client_for(personas.outsider).post(url, data).status_code == 404
        for reader in (personas.viewer, personas.operator, personas.helpdesk):
            assert client_for(reader).post(url, data).status_code in (403, 404)
        assert not EnrollmentToken.objects.exists()
        response = client_for(personas.admin).post(url, data)
        page = response.content.decode()
        token = EnrollmentToken.objects.get()
        assert response.status_code == 200 and token.uses_allowed == 25 and token.stage.name == "prod"
        secret = page.split('id="token-secret" readonly value="')[1].split('"')[0]
        assert token.token_hash == EnrollmentToken.hash_secret(secret)
        assert "systemctl enable portal-agent.timer" in page and "%post --erroronfail" in page
        again = client_for(personas.admin).get(url).content.decode()
        assert secret not in again  # shown once

    def test_the_agents_handed_out_report_to_the_portals_address_or_to_hosts_agent_url(self, personas, client_for,
                                                                                      settings):
        url = f"/teams/{personas.team.slug}/enrollment/"
        data = {"name": "edge", "uses": "1", "expires_in_hours": "24", "stage": personas.team.stages.get(name="prod").pk}
        page = client_for(personas.admin).post(url, data).content.decode()
        assert "PORTAL_URL=http://testserver\n" in page  # behind the proxy, which routes /agent/v1/ to the agents' server
        settings.HOSTS_AGENT_URL = "http://127.0.0.1:8001"  # make run's agents' server
        page = client_for(personas.admin).post(url, data).content.decode()
        assert "PORTAL_URL=http://127.0.0.1:8001\n" in page

    def test_a_bad_token_form_says_what_is_wrong(self, personas, client_for):
        response = client_for(personas.admin).post(f"/teams/{personas.team.slug}/enrollment/",
                                                   {"name": "", "uses": "0", "expires_in_hours": "5"})
        assert response.status_code == 400 and not EnrollmentToken.objects.exists()
        assert "This field is required" in response.content.decode()

    def test_revoking_is_for_team_admins(self, personas, client_for):
        token, _ = make_token(personas)
        url = f"/teams/{personas.team.slug}/enrollment/{token.pk}/revoke/"
        assert is_login(client_for(None).post(url))
        assert client_for(personas.outsider).post(url).status_code == 404
        for reader in (personas.viewer, personas.operator, personas.helpdesk):
            assert client_for(reader).post(url).status_code in (403, 404)
        token.refresh_from_db()
        assert token.revoked_at is None
        assert client_for(personas.admin).post(url).status_code == 302
        token.refresh_from_db()
        assert token.revoked_at is not None
        assert client_for(personas.admin).get(url).status_code == 405
        other, _ = reportin.enrollment_token_create(team=personas.other_team, user=personas.superuser, name="x")
        assert client_for(personas.admin).post(
            f"/teams/{personas.team.slug}/enrollment/{other.pk}/revoke/").status_code == 404

    def test_approving_is_for_team_admins(self, personas, client_for):
        _, secret = make_token(personas)
        Agent().enroll(secret)
        host = Host.objects.get(name="edge-01")
        url = f"/hosts/{host.pk}/approve/"
        assert is_login(client_for(None).post(url))
        assert client_for(personas.outsider).post(url).status_code == 404
        for reader in (personas.viewer, personas.operator, personas.helpdesk):
            assert client_for(reader).post(url).status_code == 403
        host.refresh_from_db()
        assert host.pending_approval
        assert client_for(personas.admin).post(url).status_code == 302
        host.refresh_from_db()
        assert not host.pending_approval

    def test_the_host_page_says_how_the_portal_learns_its_state(self, personas, client_for):
        _, secret = make_token(personas)
        Agent().enroll(secret)
        host = Host.objects.get(name="edge-01")
        page = client_for(personas.viewer).get(f"/hosts/{host.pk}/").content.decode()
        assert "reports in" in page and "waits for an admin's approval" in page and "Approve edge-01" not in page
        assert "Read status now" not in page
        assert "Approve edge-01" in client_for(personas.admin).get(f"/hosts/{host.pk}/").content.decode()
        ssh_host = Host.objects.create(team=personas.team, name="web-01", address="192.0.2.1")
        assert 'bi-terminal"></i> SSH' in client_for(personas.viewer).get(f"/hosts/{ssh_host.pk}/").content.decode()


class TestRuntime:
    """What changed on the host since it booted, as its agent posts it (hourly): config-diff and the package list, read
    by the same parser and recorded with the same time line as an SSH reading."""

    REPORT = ("#portal-agent config-diff\nM    chrony.conf\nA    sysctl.d/90-tuning.conf\n#portal-agent packages\n"
              "#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in {"bash": "5.2", "htop": "3.3"}.items()))

    def test_only_an_approved_hosts_own_credential_posts_it(self, personas):
        _, secret = make_token(personas)
        agent = Agent()
        assert agent.runtime(self.REPORT).status_code == 401  # no credential
        assert Agent(credential="imh_" + "x" * 40).runtime(self.REPORT).status_code == 401
        agent.enroll(secret)
        assert agent.runtime(self.REPORT).status_code == 403  # waits for an admin's approval
        host = Host.objects.get(name="edge-01")
        assert not HostRuntime.objects.filter(host=host).exists()
        reportin.host_approve(host=host, user=personas.admin)
        assert agent.runtime(self.REPORT).status_code == 200
        assert HostRuntime.objects.get(host=host).etc_total == 2

    def test_it_goes_through_the_same_parser_and_time_line_as_an_ssh_reading(self, approved, personas):
        from builds.models import Build
        from tests.diskimages.rows import succeeded_build

        host, agent = approved
        assert agent.report(status_json()).status_code == 200
        host.refresh_from_db()
        build = succeeded_build(personas.team, personas.developer, digest=host.booted_digest)
        Build.objects.filter(pk=build.pk).update(package_format="rpm", packages={"bash": "5.2"})
        response = agent.runtime(self.REPORT)
        assert response.status_code == 200 and response.json()["ok"]
        found = HostRuntime.objects.get(host=host)
        assert found.etc_changes == [["M", "/etc/chrony.conf"], ["A", "/etc/sysctl.d/90-tuning.conf"]]
        assert found.packages_added == {"htop": "3.3"} and found.image_packages_known
        assert host.events.filter(kind=EventKind.RUNTIME_CHANGED).count() == 1
        agent.runtime(self.REPORT)  # the same again: no new event
        assert host.events.filter(kind=EventKind.RUNTIME_CHANGED).count() == 1

    def test_a_command_that_failed_on_the_host_keeps_the_last_reading_and_says_why(self, approved):
        host, agent = approved
        agent.runtime(self.REPORT)
        failed = agent.runtime("#portal-agent config-diff\n#portal-agent failed: ostree admin config-diff: "
                               "error: Not an ostree system\n#portal-agent packages\n#format none\n")
        assert failed.status_code == 200 and not failed.json()["ok"]
        found = HostRuntime.objects.get(host=host)
        assert "Not an ostree system" in found.error and found.etc_total == 2
        assert agent.runtime("garbage").status_code == 200
        assert "no package list" in HostRuntime.objects.get(host=host).error

    def test_an_oversize_report_is_refused(self, approved):
        from hosts import agent_api

        _, agent = approved
        response = agent.runtime("M    x\n" * (agent_api.MAX_RUNTIME_BYTES // 7 + 1))
        assert response.status_code == 413
