"""The poller against the simulated fleet: snapshots, the denormalised state, drift per architecture, backoff,
unreachable and reachable again, host key changes (refused, marked, audited), unreadable output, hangs and floods."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts import drift, poller
from hosts.models import EventKind, Host, HostEvent, HostSnapshot, HostState, ReferenceDigest, dashboard_counts
from hosts.simbootc import Deployment
from portal.models import AuditEvent, Team
from tests.hosts.fixtures import booted_state

pytestmark = pytest.mark.django_db
REF = "127.0.0.1:1/platform/web-os:prod"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def kinds(host):
    return list(HostEvent.objects.filter(host=host).order_by("at", "id").values_list("kind", flat=True))


class TestReadingStatus:
    def test_a_first_poll_stores_a_snapshot_and_the_state_on_the_host(self, fleet):
        fleet.add("web-01", booted_state(REF, D1, "1.0"))
        hosts = fleet.start()
        assert poller.poll_hosts([hosts["web-01"].pk]) == {"ok": 0, "changed": 1, "failed": 0}
        host = fleet.host("web-01")
        assert (host.booted_digest, host.booted_version, host.architecture) == (D1, "1.0", "amd64")
        assert host.spec_image == REF and host.is_bootc and host.status_at and host.next_poll_at > timezone.now()
        assert host.state == HostState.RUNNING  # nothing known about the tag yet
        assert HostSnapshot.objects.filter(host=host).count() == 1
        assert kinds(host) == [EventKind.HOST_KEY_CONFIRMED, EventKind.FIRST_SEEN]

    def test_whether_bootc_enforced_the_signature_policy_is_kept_on_the_host_and_counted_per_stage(self, fleet):
        from hosts.tallies import tally_counts

        def enforced(state):
            booted_state(REF, D1)(state)
            state.booted.signature = "containerPolicy"  # pulled with --enforce-container-sigpolicy

        fleet.add("web-01", enforced)
        fleet.add("web-02", booted_state(REF, D1))  # bootc omits the field when it did not enforce
        hosts = fleet.start()
        poller.poll_hosts([hosts["web-01"].pk, hosts["web-02"].pk])
        assert fleet.host("web-01").booted_signature == "containerPolicy"
        assert fleet.host("web-02").booted_signature == ""
        assert set(Host.objects.enforcing().values_list("name", flat=True)) == {"web-01"}
        team_id = fleet.team.pk
        assert sum(tally_counts([team_id], enforcing=True).values()) == 1  # kept by the database's triggers
        assert sum(tally_counts([team_id], enforcing=False).values()) == 1

    def test_an_unchanged_status_costs_no_snapshot_and_no_event(self, fleet):
        fleet.add("web-01", booted_state(REF, D1))
        hosts = fleet.start()
        poller.poll_hosts([hosts["web-01"].pk])
        first = fleet.host("web-01").status_at
        assert poller.poll_hosts([hosts["web-01"].pk]) == {"ok": 1, "changed": 0, "failed": 0}
        host = fleet.host("web-01")
        assert host.status_at > first
        assert HostSnapshot.objects.filter(host=host).count() == 1 and len(kinds(host)) == 2

    def test_polls_run_concurrently_over_many_hosts(self, fleet):
        for i in range(12):
            fleet.add(f"web-{i:02d}", booted_state(REF, D1))
        hosts = fleet.start()
        assert poller.poll_hosts([h.pk for h in hosts.values()], concurrency=6) == {"ok": 0, "changed": 12,
                                                                                     "failed": 0}

    def test_hosts_without_a_confirmed_key_are_never_polled(self, fleet, personas):
        fleet.add("web-01", booted_state(REF, D1))
        fleet.start(register=False)
        from hosts.services import host_create

        host = host_create(team=personas.team, name="web-01", address="127.0.0.1", port=fleet.sim("web-01").port,
                           actor=None)
        assert poller.poll_hosts([host.pk]) == {"ok": 0, "changed": 0, "failed": 0}
        assert fleet.sim("web-01").commands == []
        assert host.pk not in poller.claim_due_hosts()


class TestDrift:
    def test_drift_is_measured_per_architecture(self, fleet):
        fleet.add("amd-01", booted_state(REF, D1, architecture="amd64"))
        fleet.add("arm-01", booted_state(REF, D2, architecture="arm64"))
        fleet.add("old-01", booted_state(REF, D2, architecture="amd64"))
        hosts = fleet.start()
        poller.poll_hosts([h.pk for h in hosts.values()])
        drift.reference_digests_set(reference=REF, digests={"": "sha256:" + "f" * 64, "amd64": D1, "arm64": D2})
        states = {h.name: (h.state, h.drifting, h.expected_digest) for h in Host.objects.all()}
        assert states["amd-01"] == (HostState.UP_TO_DATE, False, D1)
        assert states["arm-01"] == (HostState.UP_TO_DATE, False, D2)  # same digest as old-01, right for its arch
        assert states["old-01"] == (HostState.DRIFT, True, D1)
        counts = dashboard_counts(fleet.team.memberships.first().user, Team.objects.filter(pk=fleet.team.pk))
        assert counts == {"hosts": 3, "hosts_drifting": 1}

    def test_moving_the_tag_re_evaluates_every_host_that_tracks_it(self, fleet):
        fleet.add("web-01", booted_state(REF, D1))
        hosts = fleet.start()
        poller.poll_hosts([hosts["web-01"].pk])
        drift.reference_digests_set(reference=REF, digests={"amd64": D1})
        assert fleet.host("web-01").state == HostState.UP_TO_DATE
        drift.reference_digests_set(reference=REF, digests={"amd64": D2}, source="promotion")
        host = fleet.host("web-01")
        assert (host.state, host.drifting, host.expected_digest) == (HostState.DRIFT, True, D2)
        assert list(ReferenceDigest.objects.values_list("architecture", "digest", "source")) == [("amd64", D2, "promotion")]

    def test_a_single_arch_tag_matches_hosts_that_do_not_report_their_architecture(self, fleet):
        fleet.add("old-bootc", booted_state(REF, D1, architecture=""))
        hosts = fleet.start()
        poller.poll_hosts([hosts["old-bootc"].pk])
        drift.reference_digests_set(reference=REF, digests={"": D1})
        assert fleet.host("old-bootc").state == HostState.UP_TO_DATE


class TestWhatTheHostDidByItself:
    def test_an_automatic_rollback_found_by_a_regular_poll_has_no_user_and_the_journal_evidence(self, fleet):
        def staged_to_fail(state):
            booted_state(REF, D1, "1.0")(state)
            state.staged = Deployment(image=REF, digest=D2, version="2.0", will_fail_health_check=True)

        fleet.add("web-01", staged_to_fail)
        hosts = fleet.start()
        poller.poll_hosts([hosts["web-01"].pk])
        fleet.fleet.call(fleet.sim("web-01")._reboot)  # e.g. bootc-fetch-apply-updates rebooted it
        poller.poll_hosts([hosts["web-01"].pk])
        event = HostEvent.objects.get(host=hosts["web-01"], kind=EventKind.ROLLED_BACK)
        assert event.automatic and event.user is None and event.action is None
        assert (event.digest, event.previous_digest) == (D1, D2)
        assert any("FALLBACK BOOT DETECTED" in line for line in event.detail["journal"])
        assert fleet.host("web-01").state == HostState.ROLLED_BACK


class TestFailures:
    def test_an_unreachable_host_backs_off_and_its_return_is_recorded(self, fleet):
        fleet.add("web-01", booted_state(REF, D1))
        hosts = fleet.start()
        pk = hosts["web-01"].pk
        poller.poll_hosts([pk])
        fleet.fleet.set_fault("web-01", "down", True)
        pauses = []
        for _ in range(3):
            before = timezone.now()
            assert poller.poll_hosts([pk])["failed"] == 1
            host = fleet.host("web-01")
            pauses.append((host.next_poll_at - before).total_seconds())
        assert host.state == HostState.UNREACHABLE and not host.reachable and host.failures == 3
        assert "Connection refused" in host.last_error or "unreachable" in host.last_error
        assert pauses[0] < pauses[1] < pauses[2]  # growing pauses
        assert host.booted_digest == D1  # the last known state is kept
        fleet.fleet.set_fault("web-01", "down", False)
        assert poller.poll_hosts([pk])["changed"] == 1
        host = fleet.host("web-01")
        assert host.reachable and host.failures == 0 and host.state == HostState.RUNNING
        assert kinds(host)[-2:] == [EventKind.UNREACHABLE, EventKind.REACHABLE]
        assert kinds(host).count(EventKind.UNREACHABLE) == 1  # once, not once per failed poll

    def test_a_changed_host_key_is_refused_marked_and_audited(self, fleet):
        fleet.add("web-01", booted_state(REF, D1))
        hosts = fleet.start()
        pk = hosts["web-01"].pk
        poller.poll_hosts([pk])
        sim = fleet.sim("web-01")
        fleet.fleet.rotate_host_key("web-01")
        sim.commands.clear()
        logins = sim.logins
        assert poller.poll_hosts([pk])["failed"] == 1
        assert sim.commands == [] and sim.logins == logins  # 0 commands sent
        host = fleet.host("web-01")
        assert host.state == HostState.HOST_KEY_CHANGED and host.offered_host_key == sim.public_host_key()
        assert host.next_poll_at is None and pk not in poller.claim_due_hosts()
        assert AuditEvent.objects.filter(action="hosts.host_key_changed", object_id=str(pk)).count() == 1
        assert kinds(host)[-1] == EventKind.HOST_KEY_CHANGED
        # An admin confirms the new key: polling resumes.
        from hosts.services import host_confirm_key

        host_confirm_key(host=host, key=host.offered_host_key, actor=fleet.team.memberships.get(role="admin").user)
        assert poller.poll_hosts([pk])["ok"] + poller.poll_hosts([pk])["ok"] >= 1
        assert fleet.host("web-01").state == HostState.RUNNING

    def test_malformed_output_marks_the_host_unreadable_and_keeps_the_raw_output(self, fleet):
        fleet.add("web-01", booted_state(REF, D1))
        hosts = fleet.start()
        pk = hosts["web-01"].pk
        poller.poll_hosts([pk])
        fleet.fleet.set_fault("web-01", "garbage", True)
        assert poller.poll_hosts([pk])["changed"] == 1
        host = fleet.host("web-01")
        assert host.state == HostState.UNREADABLE and "cut off" in host.last_error
        assert host.raw_status.startswith('{"apiVersion"')
        assert host.booted_digest == D1  # the last readable state stays
        snapshot = HostSnapshot.objects.filter(host=host).first()
        assert snapshot.parsed is None and snapshot.error
        fleet.fleet.set_fault("web-01", "garbage", False)
        poller.poll_hosts([pk])
        assert fleet.host("web-01").state == HostState.RUNNING

    @pytest.mark.parametrize("nul, where", [("byte", "NUL byte at line 1"),
                                            ("escaped", "NUL character in status.booted.image.version")])
    def test_a_status_holding_a_nul_is_unreadable_and_its_bytes_are_kept(self, fleet, nul, where):
        fleet.add("web-01", booted_state(REF, D1, "1.0"))
        hosts = fleet.start()
        pk = hosts["web-01"].pk
        poller.poll_hosts([pk])
        assert fleet.host("web-01").state == HostState.RUNNING
        fleet.fleet.set_fault("web-01", "nul", nul)
        assert poller.poll_hosts([pk]) == {"ok": 0, "changed": 1, "failed": 0}
        host = fleet.host("web-01")
        assert host.state == HostState.UNREADABLE and host.last_error_kind == "unreadable"
        assert where in host.last_error
        snapshot = HostSnapshot.objects.filter(host=host).first()
        assert snapshot.parsed is None and where in snapshot.error
        printed = fleet.sim("web-01").cmd_status([]).encode()
        assert "\x00" not in snapshot.raw and "\x00" not in host.raw_status
        if nul == "byte":  # the text shows U+FFFD, so the bytes are kept beside it
            assert "\ufffd" in host.raw_status and bytes(snapshot.raw_bytes) == printed
        else:  # the text is exactly what was printed
            assert snapshot.raw.encode() == printed and bytes(snapshot.raw_bytes) == b""
        event = HostEvent.objects.get(host=host, kind=EventKind.UNREADABLE)
        assert where in event.summary and "\x00" not in event.detail["first_bytes"]
        fleet.fleet.set_fault("web-01", "nul", "")
        poller.poll_hosts([pk])
        assert fleet.host("web-01").state == HostState.RUNNING

    def test_an_output_flood_is_capped_and_unreadable(self, fleet, settings):
        settings.HOSTS_MAX_STATUS_BYTES = 100_000
        fleet.add("web-01", booted_state(REF, D1))
        hosts = fleet.start()
        fleet.fleet.set_fault("web-01", "flood", True)
        poller.poll_hosts([hosts["web-01"].pk])
        host = fleet.host("web-01")
        assert host.state == HostState.UNREADABLE and "cut off" in host.last_error
        assert len(host.raw_status) <= 100_000

    def test_a_hanging_host_fails_by_its_deadline_and_the_others_are_recorded(self, fleet, settings):
        settings.HOSTS_HANDSHAKE_TIMEOUT = 1.0
        for name in ("hang-01", "web-01", "web-02"):
            fleet.add(name, booted_state(REF, D1))
        hosts = fleet.start()
        fleet.fleet.set_fault("hang-01", "hang", True)
        assert poller.poll_hosts([h.pk for h in hosts.values()]) == {"ok": 0, "changed": 2, "failed": 1}
        assert fleet.host("hang-01").state == HostState.UNREACHABLE
        assert "did not" in fleet.host("hang-01").last_error
        assert fleet.host("web-01").state == fleet.host("web-02").state == HostState.RUNNING

    def test_a_slow_command_hits_its_deadline(self, fleet, settings):
        settings.HOSTS_COMMAND_TIMEOUT = 0.5
        fleet.add("slow-01", booted_state(REF, D1))
        hosts = fleet.start()
        fleet.fleet.set_fault("slow-01", "slow", 2.0)
        poller.poll_hosts([hosts["slow-01"].pk])
        host = fleet.host("slow-01")
        assert host.state == HostState.UNREACHABLE and host.last_error_kind == "timeout"


class TestScheduling:
    def test_due_hosts_are_claimed_once(self, fleet):
        for name in ("web-01", "web-02"):
            fleet.add(name, booted_state(REF, D1))
        hosts = fleet.start()
        Host.objects.update(next_poll_at=timezone.now() - timedelta(seconds=1))
        claimed = poller.claim_due_hosts()
        assert sorted(claimed) == sorted(h.pk for h in hosts.values())
        assert poller.claim_due_hosts() == []  # a second beat in the same minute gets nothing

    def test_the_beat_task_fans_out_to_poll_tasks(self, fleet, settings):
        from hosts import tasks

        settings.CELERY_TASK_ALWAYS_EAGER = True
        from portal.celery import app

        app.conf.task_always_eager = True
        try:
            fleet.add("web-01", booted_state(REF, D1))
            fleet.start()
            Host.objects.update(next_poll_at=timezone.now() - timedelta(seconds=1))
            assert tasks.poll_due_hosts() == 1
        finally:
            app.conf.task_always_eager = False
        assert fleet.host("web-01").status_at is not None
