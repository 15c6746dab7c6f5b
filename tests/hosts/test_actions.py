"""Actions on hosts, end to end against the simulator and the real registry: each is a Run with a streamed log, one at a
time per host (enforced by the database), followed by a re-poll whose changes land on the timeline with the user behind
them. Includes the scripted sequence upgrade -> reboot -> failed health check -> automatic rollback."""



import pytest
from django.db import IntegrityError, transaction

from hosts import actions, poller
from hosts.models import ActionKind, EventKind, HostAction, HostEvent, HostState
from portal import logsink
from portal.models import AuditEvent, Run, RunStatus
from tests.helpers import start_in_thread, wait_for
from tests.hosts.fixtures import booted_state

pytestmark = pytest.mark.django_db


def run_action(host, kind, user, image=""):
    action = actions.host_action_request(host=host, kind=kind, user=user, image=image)
    actions.host_action_execute(action.pk)
    action.refresh_from_db()
    action.run.refresh_from_db()
    host.refresh_from_db()
    return action


def timeline(host):
    return [(e.kind, e.automatic, e.user.username if e.user else None,
             e.action.kind if e.action else None)
            for e in HostEvent.objects.filter(host=host).exclude(kind__in=[EventKind.HOST_KEY_CONFIRMED,
                                                                           EventKind.FIRST_SEEN]).order_by("at", "id")]


def log_text(run):
    return "\n".join(text for _, text in logsink.lines_after(run, 0))


class TestTheScriptedSequence:
    def test_upgrade_reboot_failed_health_check_automatic_rollback(self, fleet, prod_host, demo_images, personas):
        digests, _ = demo_images
        operator = personas.operator
        old, new = digests["1.0"]["amd64"], digests["1.1"]["amd64"]

        stage = run_action(prod_host, ActionKind.UPGRADE_STAGE, operator)
        assert stage.run.status == RunStatus.SUCCEEDED, stage.run.exit_reason
        assert "Queued for next boot" in log_text(stage.run)
        assert (prod_host.state, prod_host.staged_digest) == (HostState.UPDATE_STAGED, new)

        fleet.fleet.set_fault("web-01", "fail_health_check", True)
        fleet.sim("web-01").state.staged.will_fail_health_check = True
        reboot = run_action(prod_host, ActionKind.REBOOT, operator)
        assert reboot.run.status == RunStatus.SUCCEEDED, reboot.run.exit_reason
        assert "is back" in log_text(reboot.run)

        assert timeline(prod_host) == [
            (EventKind.ACTION, False, "operator", ActionKind.UPGRADE_STAGE),
            (EventKind.STAGED, False, "operator", ActionKind.UPGRADE_STAGE),
            (EventKind.ACTION, False, "operator", ActionKind.REBOOT),
            (EventKind.ROLLED_BACK, True, "operator", ActionKind.REBOOT),
        ]
        rollback = HostEvent.objects.get(host=prod_host, kind=EventKind.ROLLED_BACK)
        assert (rollback.digest, rollback.previous_digest, rollback.version) == (old, new, "1.0")
        assert rollback.summary.startswith("Automatic rollback:") and "health check" in rollback.summary
        assert any("FALLBACK BOOT DETECTED" in line for line in rollback.detail["journal"])
        assert (prod_host.state, prod_host.booted_digest, prod_host.rollback_digest, prod_host.staged_digest) == (
            HostState.ROLLED_BACK, old, new, "")
        assert prod_host.drifting

    def test_an_operator_rollback_is_told_apart_from_an_automatic_one(self, fleet, prod_host, personas):
        first_booted, first_rollback = prod_host.booted_digest, prod_host.rollback_digest
        queued = run_action(prod_host, ActionKind.ROLLBACK, personas.operator)
        assert "Next boot: rollback deployment" in log_text(queued.run)
        assert prod_host.rollback_queued and prod_host.state == HostState.DRIFT
        assert "rollback deployment" in prod_host.boots_next()
        run_action(prod_host, ActionKind.REBOOT, personas.operator)
        events = timeline(prod_host)
        assert events[1] == (EventKind.ROLLBACK_QUEUED, False, "operator", ActionKind.ROLLBACK)
        assert events[-1] == (EventKind.ROLLED_BACK, False, "operator", ActionKind.REBOOT)
        assert (prod_host.booted_digest, prod_host.rollback_digest) == (first_rollback, first_booted)

    def test_a_rollback_with_a_reboot_boots_the_rollback_deployment_now(self, fleet, prod_host, personas):
        booted, rollback = prod_host.booted_digest, prod_host.rollback_digest
        action = run_action(prod_host, ActionKind.ROLLBACK_APPLY, personas.operator)
        assert action.run.status == RunStatus.SUCCEEDED, action.run.exit_reason
        assert "is back" in log_text(action.run)
        assert (prod_host.booted_digest, prod_host.rollback_digest, prod_host.rollback_queued) == (rollback, booted, False)
        assert timeline(prod_host)[-1] == (EventKind.ROLLED_BACK, False, "operator", ActionKind.ROLLBACK_APPLY)
        assert prod_host.state == HostState.ROLLED_BACK

    def test_upgrade_and_reboot_boots_the_new_deployment(self, fleet, prod_host, demo_images, personas):
        digests, _ = demo_images
        applied = run_action(prod_host, ActionKind.UPGRADE_APPLY, personas.operator)
        assert applied.run.status == RunStatus.SUCCEEDED, applied.run.exit_reason
        assert prod_host.booted_digest == digests["1.1"]["amd64"] and prod_host.state == HostState.UP_TO_DATE
        kinds = [k for k, *_ in timeline(prod_host)]
        assert kinds == [EventKind.ACTION, EventKind.BOOTED]  # staged and booted between two polls: one event
        booted = HostEvent.objects.get(host=prod_host, kind=EventKind.BOOTED)
        assert booted.previous_digest == digests["1.0"]["amd64"] and booted.user == personas.operator

    def test_an_update_check_records_the_update_without_changing_anything(self, prod_host, personas):
        checked = run_action(prod_host, ActionKind.UPGRADE_CHECK, personas.operator)
        assert "Update available for" in log_text(checked.run)
        assert prod_host.update_digest and not prod_host.staged_digest
        assert timeline(prod_host)[-1][:3] == (EventKind.UPDATE_AVAILABLE, False, "operator")

    def test_switching_to_another_tag_of_the_team(self, fleet, prod_host, demo_images, personas):
        digests, base = demo_images
        switched = run_action(prod_host, ActionKind.SWITCH, personas.operator, image=f"{base}:dev")
        assert switched.run.status == RunStatus.SUCCEEDED, switched.run.exit_reason
        assert prod_host.spec_image == f"{base}:dev" and prod_host.staged_digest == digests["1.2"]["amd64"]
        assert [k for k, *_ in timeline(prod_host)][-2:] == [EventKind.SWITCHED, EventKind.STAGED]

    def test_switching_to_a_digest_pins_exactly_that_image(self, fleet, prod_host, demo_images, personas):
        digests, base = demo_images
        target = f"{base}@{digests['1.2']['amd64']}"
        switched = run_action(prod_host, ActionKind.SWITCH_APPLY, personas.operator, image=target)
        assert switched.run.status == RunStatus.SUCCEEDED, switched.run.exit_reason
        assert prod_host.spec_image == target and prod_host.booted_digest == digests["1.2"]["amd64"]
        assert prod_host.booted_version == "1.2"

    def test_a_switch_on_a_stage_that_requires_a_key_makes_bootc_enforce_the_hosts_policy(
            self, fleet, prod_host, demo_images, personas):
        from builds.supplychain import services as supplychain

        digests, base = demo_images
        stage = personas.team.stages.get(name="prod")
        prod_host.stage = stage
        prod_host.save(update_fields=["stage"])
        key = supplychain.signing_key_generate(team=personas.team, user=personas.admin, name="release")
        supplychain.stage_signing_policy_set(stage=stage, key=key, user=personas.admin)
        effect = actions.action_effect(prod_host, ActionKind.SWITCH, f"{base}:dev")
        assert "prod requires a signature with key release" in effect and "--enforce-container-sigpolicy" in effect

        refused = run_action(prod_host, ActionKind.SWITCH, personas.operator, image=f"{base}:dev")
        assert refused.run.status == RunStatus.FAILED  # the simulated host still has Fedora's accept-anything policy
        assert "bootc switch --quiet --enforce-container-sigpolicy" in log_text(refused.run)
        assert "refusing usage" in refused.run.exit_reason + log_text(refused.run)
        assert prod_host.spec_image == f"{base}:prod"

        fleet.fleet.edit_etc("web-01", "containers/policy.json", "M", text='{"default": [{"type": "reject"}]}')
        switched = run_action(prod_host, ActionKind.SWITCH, personas.operator, image=f"{base}:dev")
        assert switched.run.status == RunStatus.SUCCEEDED, switched.run.exit_reason
        assert prod_host.staged_digest == digests["1.2"]["amd64"]
        assert prod_host.status["staged"]["image"]["signature"] == "containerPolicy"

    def test_a_switch_outside_the_teams_repositories_is_refused(self, prod_host, personas):
        with pytest.raises(actions.HostError, match="not an image of"):
            actions.host_action_request(host=prod_host, kind=ActionKind.SWITCH, user=personas.operator,
                                         image="quay.io/someone/else:latest")
        assert not HostAction.objects.exists()

    def test_a_failing_command_fails_the_run_with_bootc_s_error(self, fleet, personas, host_settings):
        fleet.add("lonely", booted_state("127.0.0.1:1/platform/web-os:prod"))
        host = fleet.start()["lonely"]
        poller.poll_hosts([host.pk])
        action = run_action(host, ActionKind.UPGRADE_STAGE, personas.operator)
        assert action.run.status == RunStatus.FAILED
        assert action.run.exit_reason.startswith("error:")
        assert not action.active and action.finished_at


class TestOneAtATime:
    def test_the_database_refuses_a_second_active_action(self, prod_host, personas):
        first = actions.host_action_request(host=prod_host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator)
        with pytest.raises(actions.ActionInProgress, match="busy"):
            actions.host_action_request(host=prod_host, kind=ActionKind.REBOOT, user=personas.operator)
        with pytest.raises(IntegrityError), transaction.atomic():
            HostAction.objects.create(host=prod_host, run=first.run.__class__.objects.create(
                kind="host_action", title="x", team=prod_host.team), kind=ActionKind.REBOOT)
        actions.host_action_execute(first.pk)
        second = actions.host_action_request(host=prod_host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator)
        assert second.active

    @pytest.mark.django_db(transaction=True)
    def test_the_host_stays_busy_until_a_reboot_has_seen_it_come_back(self, fleet, personas):
        """A rebooting action waits for the host to come back; until then no other action may start on it. The host
        stays down until the test lets it boot (never_come_back, then cleared), however long the checks take."""
        fleet.add("web-02", booted_state("127.0.0.1:1/platform/web-os:prod"))
        host = fleet.start()["web-02"]
        poller.poll_hosts([host.pk])
        fleet.fleet.set_fault("web-02", "never_come_back", True)
        reboot = actions.host_action_request(host=host, kind=ActionKind.REBOOT, user=personas.operator)

        thread = start_in_thread(actions.host_action_execute, reboot.pk)
        try:
            wait_for(lambda: Run.objects.get(pk=reboot.run_id).phase == "waiting for the host to come back",
                     timeout=15, what="the reboot action to wait for the host")
            wait_for(lambda: fleet.fleet.hosts["web-02"].held_down, timeout=15, what="the host to go down")
            with pytest.raises(actions.ActionInProgress, match="busy"):
                actions.host_action_request(host=host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator)
        finally:
            fleet.fleet.set_fault("web-02", "never_come_back", False)  # it boots
            thread.join(30)
        reboot.refresh_from_db()
        reboot.run.refresh_from_db()
        assert reboot.run.status == RunStatus.SUCCEEDED and not reboot.active, reboot.run.exit_reason
        assert actions.host_action_request(host=host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator).active

    def test_an_action_whose_run_was_reaped_releases_the_host(self, prod_host, personas):
        from portal import services as portal_services

        stuck = actions.host_action_request(host=prod_host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator)
        portal_services.run_start(stuck.run)
        portal_services.run_finish(stuck.run, status=RunStatus.FAILED, reason="worker died")
        again = actions.host_action_request(host=prod_host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator)
        assert again.active and not HostAction.objects.get(pk=stuck.pk).active


class TestWhoMay:
    @pytest.mark.parametrize("who", ["viewer", "developer", "approver", "helpdesk", "outsider"])
    def test_only_operators_and_admins_act(self, prod_host, personas, who):
        from django.core.exceptions import PermissionDenied
        from django.http import Http404

        with pytest.raises((PermissionDenied, Http404)):
            actions.host_action_request(host=prod_host, kind=ActionKind.REBOOT, user=getattr(personas, who))
        assert not Run.objects.exists()

    def test_an_action_is_audited_with_its_effect(self, prod_host, personas):
        actions.host_action_request(host=prod_host, kind=ActionKind.REBOOT, user=personas.admin)
        event = AuditEvent.objects.get(action="hosts.action.reboot")
        assert event.actor == personas.admin and "REBOOTS" in event.detail["effect"]


def test_a_quiet_command_keeps_its_run_alive(fleet, personas, settings):
    """bootc upgrade --quiet can pull for minutes without a line of output: the run must keep beating."""
    from datetime import timedelta

    from django.utils import timezone

    settings.RUN_HEARTBEAT_SECONDS = 0.2
    fleet.add("slow-01", booted_state("127.0.0.1:1/platform/web-os:prod"))
    host = fleet.start()["slow-01"]
    poller.poll_hosts([host.pk])
    fleet.fleet.set_fault("slow-01", "slow", 1.5)
    action = actions.host_action_request(host=host, kind=ActionKind.UPGRADE_CHECK, user=personas.operator)
    started = timezone.now()
    actions.host_action_execute(action.pk)
    action.run.refresh_from_db()
    assert action.run.heartbeat_at > started + timedelta(seconds=1)
