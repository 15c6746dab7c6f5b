"""Rollouts end to end on the simulated fleet, over real SSH and the real registry: a canary whose hosts fail greenboot
halts the rollout (later batches never start, failed hosts rolled back and shown so at once), a clean rollout
completes (old bootc versions never sent flags they do not know, soft reboots where the status allows), reboots
happen only inside the maintenance window while downloads do not wait for it, a host that never comes back is failed
"unreachable", and an engine that starts on a rollout whose worker died acts on no host twice."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from builds.models import ImageDefinition
from builds.releases.apply import PROMOTION_APPLIED
from hosts import poller
from hosts.connect import session_for, target_for
from hosts.models import EventKind, HostEvent, HostState
from hosts.rollouts import engine, services
from hosts.rollouts.models import Rollout, RolloutHost, RolloutStatus, Step
from portal import registry, runs, ssh
from portal import services as portal_services
from portal.models import AuditEvent, Run, RunStatus
from tests.helpers import wait_for
from tests.hosts.rollout_steps import commands_with, make_fleet, rows_by_name, set_policy, start

pytestmark = pytest.mark.django_db


class TestACanaryThatFailsGreenboot:
    def test_halts_after_the_canary_rolls_the_failures_back_and_never_starts_batch_one(
            self, fleet, demo_images, prod, personas, rollout_settings):
        names = [f"web-{i:02d}" for i in range(1, 11)]
        make_fleet(fleet, demo_images, names)
        set_policy(prod, personas.admin, canary_count=4, batch_count=3, max_failed_percent=25)
        for name in ("web-01", "web-02"):  # two of the four canary hosts fail greenboot: 50 % > 25 %
            fleet.fleet.set_fault(name, "fail_health_check", True)
        rollout = start(prod, demo_images, personas.operator)

        run = engine.rollout_execute(rollout.pk)

        rollout.refresh_from_db()
        run.refresh_from_db()
        assert rollout.status == RolloutStatus.HALTED and run.status == RunStatus.FAILED
        assert run.exit_reason.startswith("Halted after the canary: 2 of 4 hosts of the batch failed")
        rows = rows_by_name(rollout)
        assert {n: rows[n].step for n in names[:4]} == {
            "web-01": Step.ROLLED_BACK, "web-02": Step.ROLLED_BACK, "web-03": Step.UPDATED, "web-04": Step.UPDATED}
        assert "greenboot's health check failed" in rows["web-01"].reason
        assert all(rows[n].step == Step.SKIPPED and rows[n].batch > 0 for n in names[4:])
        for name in names[4:]:  # batch 1 never started: nothing was sent to its hosts but status reads
            assert not [c for c in fleet.sim(name).commands if "status" not in c], fleet.sim(name).commands
        # Rolled back hosts show so at once, before any poll: no host is shown updated while it boots another digest.
        digests, _ = demo_images
        for name in ("web-01", "web-02"):
            host = fleet.host(name)
            assert host.state == HostState.ROLLED_BACK and host.booted_digest == digests["1.0"]["amd64"]
            assert HostEvent.objects.filter(host=host, kind=EventKind.ACTION, detail__rollout=rollout.pk).exists()
        for row in rows.values():
            if row.step == Step.UPDATED:
                assert fleet.host(row.host.name).booted_digest == digests["1.1"]["amd64"]
        assert AuditEvent.objects.filter(action="rollout.halt", object_id=str(rollout.pk)).exists()
        assert AuditEvent.objects.filter(action="rollout.host_failed", object_id=str(rollout.pk)).count() == 2
        assert engine.summary(rows.values()) == "2/10 updated · 2 rolled back · 6 skipped"
        # The hosts are free again for another rollout.
        assert not RolloutHost.objects.filter(rollout=rollout, active=True).exists()


class TestACleanRollout:
    def test_completes_batch_by_batch_old_bootc_gets_no_unknown_flag_soft_reboot_where_capable(
            self, fleet, demo_images, prod, personas, rollout_settings):
        def prepare(name, state):
            if name == "old-01":
                state.bootc_version = "1.11.0"  # no --download-only: downloads with the reboot, in the window
            if name == "soft-01":
                state.soft_reboot_capable = True

        names = ["old-01", "soft-01", "web-01", "web-02", "web-03"]
        make_fleet(fleet, demo_images, names, prepare=prepare)
        host = fleet.host("web-03")
        host.labels = "canary site=a"
        host.save(update_fields=["labels"])
        set_policy(prod, personas.admin, canary_selector="canary", batch_percent=40, soak_seconds=0,
                   max_failed_percent=0)
        rollout = start(prod, demo_images, personas.operator)
        assert [r.batch for r in RolloutHost.objects.filter(rollout=rollout, host=host)] == [0]

        run = engine.rollout_execute(rollout.pk)

        rollout.refresh_from_db()
        run.refresh_from_db()
        assert (rollout.status, run.status) == (RolloutStatus.COMPLETED, RunStatus.SUCCEEDED), run.exit_reason
        assert run.exit_reason == "Completed: 5/5 hosts updated."
        digests, _ = demo_images
        assert {fleet.host(n).booted_digest for n in names} == {digests["1.1"]["amd64"]}
        assert not commands_with(fleet, "old-01", "--download-only")
        assert commands_with(fleet, "old-01", "bootc upgrade --quiet --apply")
        assert commands_with(fleet, "web-01", "--download-only") and commands_with(fleet, "web-01", "--from-downloaded")
        rows = rows_by_name(rollout)
        assert rows["soft-01"].soft_reboot and commands_with(fleet, "soft-01", "--soft-reboot=auto")
        assert not rows["web-01"].soft_reboot and not commands_with(fleet, "web-01", "--soft-reboot")
        assert all(row.downtime_seconds is not None for row in rows.values())
        assert fleet.sim("soft-01").state.last_reboot_soft


class TestTheDisruptionBudget:
    def test_at_most_k_hosts_of_a_label_group_reboot_or_soak_at_once(self, fleet, demo_images, prod, personas,
                                                                     rollout_settings):
        names = ["a-01", "a-02", "a-03", "b-01"]
        make_fleet(fleet, demo_images, names)
        for name in names:
            host = fleet.host(name)
            host.labels = f"site={name[0]}"
            host.save(update_fields=["labels"])
        set_policy(prod, personas.admin, budget_label="site", max_updating_per_group=1, max_downloading_per_group=1,
                   soak_seconds=1)
        rollout = start(prod, demo_images, personas.operator)
        engine.rollout_execute(rollout.pk)
        rows = rows_by_name(rollout)
        assert {row.step for row in rows.values()} == {Step.UPDATED}
        site_a = sorted((rows[n] for n in names[:3]), key=lambda row: row.reboot_sent_at)
        for earlier, later in zip(site_a, site_a[1:], strict=False):
            assert later.reboot_sent_at >= earlier.finished_at  # one site=a host disrupted at a time, soak included
            assert later.download_started_at >= earlier.staged_at  # and one downloading at a time
        # site=b has a budget of its own: its host did not wait for site=a's.
        assert rows["b-01"].reboot_sent_at < site_a[-1].reboot_sent_at


class TestMaintenanceWindows:
    @pytest.mark.django_db(transaction=True)
    def test_downloads_happen_outside_the_window_and_reboots_only_inside_it(
            self, fleet, demo_images, prod, personas, rollout_settings):
        names = ["web-01", "web-02"]
        make_fleet(fleet, demo_images, names)
        set_policy(prod, personas.admin, window_timezone="Europe/Paris",
                   windows=[{"weekdays": [0], "starts": "02:00", "ends": "03:00"}])
        now = {"t": datetime(2026, 12, 6, 12, 0, tzinfo=UTC)}  # a Sunday noon: the window is Monday 02:00 in Paris
        rollout = start(prod, demo_images, personas.operator)
        done = threading.Event()

        def execute():
            try:
                engine.rollout_execute(rollout.pk, clock=lambda: now["t"])
            finally:
                connection.close()
                done.set()

        thread = threading.Thread(target=execute)
        thread.start()
        try:
            wait_for(lambda: all(r.step == Step.STAGED for r in RolloutHost.objects.filter(rollout=rollout)),
                     timeout=20, what="both hosts staged outside the window")
            time.sleep(0.5)  # several ticks outside the window: nothing reboots
            assert all(r.step == Step.STAGED and r.reboot_sent_at is None
                       for r in RolloutHost.objects.filter(rollout=rollout))
            assert not any(commands_with(fleet, n, "--apply") for n in names)
            now["t"] = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)  # Monday 02:30 in Paris
            assert done.wait(30)
        finally:
            done.wait(30)
            thread.join(5)
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.COMPLETED, rollout.status_note
        assert all(commands_with(fleet, n, "--from-downloaded --apply") for n in names)


class TestHostsThatFail:
    def test_a_host_that_never_comes_back_is_failed_unreachable(
            self, fleet, demo_images, prod, personas, rollout_settings):
        make_fleet(fleet, demo_images, ["web-01", "web-02"])
        set_policy(prod, personas.admin, max_failed_percent=100)
        rollout_settings.ROLLOUTS_REBOOT_WAIT_SECONDS = 2  # web-01 is back in well under a second; web-02 is waited for
        fleet.fleet.set_fault("web-02", "never_come_back", True)
        rollout = start(prod, demo_images, personas.operator)
        engine.rollout_execute(rollout.pk)
        rows = rows_by_name(rollout)
        assert rows["web-01"].step == Step.UPDATED
        assert rows["web-02"].step == Step.FAILED and rows["web-02"].reason.startswith("unreachable")
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.COMPLETED and rollout.status_note == "Completed: 1/2 hosts updated."

    def test_a_full_disk_fails_the_download_and_the_host_keeps_running_what_it_ran(
            self, fleet, demo_images, prod, personas, rollout_settings):
        make_fleet(fleet, demo_images, ["web-01"])
        set_policy(prod, personas.admin, max_failed_percent=100)
        fleet.fleet.set_fault("web-01", "disk_full", True)
        rollout = start(prod, demo_images, personas.operator)
        engine.rollout_execute(rollout.pk)
        row = rows_by_name(rollout)["web-01"]
        assert row.step == Step.FAILED and "No space left on device" in row.reason
        assert not commands_with(fleet, "web-01", "--apply")


class TestPreflight:
    def test_a_host_without_room_on_sysroot_is_skipped_with_the_reason_and_the_rest_go_on(
            self, fleet, demo_images, prod, personas, rollout_settings):
        def prepare(name, state):
            if name == "web-02":
                state.disk_free_bytes = 100 * 1024 ** 2

        make_fleet(fleet, demo_images, ["web-01", "web-02"], prepare=prepare)
        set_policy(prod, personas.admin)
        rollout = start(prod, demo_images, personas.operator)
        engine.rollout_execute(rollout.pk)
        rows = rows_by_name(rollout)
        assert rows["web-01"].step == Step.UPDATED
        assert rows["web-02"].step == Step.SKIPPED
        assert rows["web-02"].reason == "pre-flight: 100 MiB free on /sysroot, the update needs 1.0 GiB"
        assert commands_with(fleet, "web-02", "df --output=avail -B1 /sysroot")
        assert not commands_with(fleet, "web-02", "--download-only")
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.COMPLETED  # a skipped host is not a failure


class TestResuming:
    def test_an_engine_on_a_rollout_whose_worker_died_after_the_reboot_never_reboots_again(
            self, fleet, demo_images, prod, personas, rollout_settings):
        make_fleet(fleet, demo_images, ["web-01"])
        set_policy(prod, personas.admin)
        rollout = start(prod, demo_images, personas.operator)
        host = fleet.host("web-01")
        # What the dead worker did: it downloaded, recorded the reboot, sent it, and died before recording the rest.
        with session_for(target_for(host)) as connection:
            assert connection.run(ssh.bootc_upgrade(download_only=True)).exit_status == 0
            RolloutHost.objects.filter(rollout=rollout).update(step=Step.REBOOTING, reboot_sent_at=rollout.created_at)
            assert connection.run(ssh.bootc_upgrade(from_downloaded=True, apply=True)).exit_status == 0
        portal_services.run_start(rollout.run)
        portal_services.run_finish(rollout.run, status=RunStatus.FAILED, reason="The worker stopped")

        resumed = services.rollouts_resume_orphans()
        assert [r.pk for r in resumed] == [rollout.pk]
        rollout.refresh_from_db()
        engine.rollout_execute(rollout.pk)

        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.COMPLETED, rollout.status_note
        assert len(commands_with(fleet, "web-01", "--apply")) == 1  # the reboot the dead worker sent, and no other
        assert AuditEvent.objects.filter(action="rollout.resume_worker", object_id=str(rollout.pk)).exists()


class TestOneRolloutPerHost:
    def test_the_database_refuses_a_second_active_rollout_row_for_a_host(self, fleet, demo_images, prod, personas,
                                                                           rollout_settings):
        make_fleet(fleet, demo_images, ["web-01"])
        rollout = start(prod, demo_images, personas.operator)
        row = RolloutHost.objects.get(rollout=rollout)
        other = Rollout.objects.create(team=prod.team, stage=prod, run=portal_services.run_create(
            kind="rollout", title="x", team=prod.team), reference=rollout.reference, digest=rollout.digest)
        with pytest.raises(IntegrityError), transaction.atomic():
            RolloutHost.objects.create(rollout=other, host=row.host, batch=1)

    def test_a_second_rollout_on_the_stage_is_refused_while_one_runs(self, fleet, demo_images, prod, personas,
                                                                     rollout_settings):
        make_fleet(fleet, demo_images, ["web-01"])
        first = start(prod, demo_images, personas.operator)
        with pytest.raises(services.RolloutError, match=f"Rollout #{first.pk} is still running"):
            start(prod, demo_images, personas.operator)


class TestPoliciesThatCanNeverFinish:
    @pytest.mark.parametrize("fields, windows, reason", [
        ({"max_updating_per_group": 0}, [], "A budget of 0 hosts rebooting"),
        ({}, [{"weekdays": [], "starts": "01:00", "ends": "02:00"}], "no day of the week"),
        ({}, [{"weekdays": [1], "starts": "01:00", "ends": "01:00"}], "starts when it ends"),
        ({"canary_selector": "nowhere"}, [], "matches none of the 1 hosts"),
        ({"canary_count": 2, "canary_percent": 10}, [], "Choose the canary one way"),
        ({"max_failed_total": 0}, [], "Halting after 0 failed hosts"),
    ])
    def test_are_refused_when_saved_with_the_reason(self, prod, personas, fleet, demo_images, rollout_settings,
                                                    fields, windows, reason):
        make_fleet(fleet, demo_images, ["web-01"])
        with pytest.raises(ValidationError, match=reason):
            set_policy(prod, personas.admin, windows=windows, **fields)

    def test_only_team_admins_change_a_policy(self, prod, personas):
        from django.core.exceptions import PermissionDenied

        with pytest.raises(PermissionDenied):
            set_policy(prod, personas.operator, max_failed_percent=10)


class TestAutoUpdate:
    def test_a_promotion_to_a_stage_whose_hosts_follow_automatically_starts_a_rollout(
            self, fleet, demo_images, prod, personas, rollout_settings):
        digests, base = demo_images
        make_fleet(fleet, demo_images, ["web-01"])
        ImageDefinition.objects.create(team=personas.team, name="web-os", repository=base)
        set_policy(prod, personas.admin, follow_automatically=True)
        registry.announce(PROMOTION_APPLIED, reference=f"{base}:prod", digest=digests["1.1"]["amd64"],
                          architecture="amd64")
        rollout = Rollout.objects.get(stage=prod)
        assert rollout.started_by is None and rollout.run.trigger == "promotion"
        assert AuditEvent.objects.get(action="rollout.start", object_id=str(rollout.pk)).actor_name == "portal"

    def test_a_stage_without_it_starts_nothing(self, fleet, demo_images, prod, personas, rollout_settings):
        digests, base = demo_images
        make_fleet(fleet, demo_images, ["web-01"])
        ImageDefinition.objects.create(team=personas.team, name="web-os", repository=base)
        registry.announce(PROMOTION_APPLIED, reference=f"{base}:prod", digest=digests["1.1"]["amd64"])
        assert not Rollout.objects.exists()


class TestControls:
    @pytest.mark.django_db(transaction=True)
    def test_abort_and_roll_back_skips_the_hosts_waiting_and_rolls_back_the_updated_ones(
            self, fleet, demo_images, prod, personas, rollout_settings):
        names = ["web-01", "web-02", "web-03"]
        make_fleet(fleet, demo_images, names)
        set_policy(prod, personas.admin, canary_count=1, windows=[{"weekdays": [0], "starts": "02:00", "ends": "03:00"}])
        now = {"t": datetime(2026, 12, 7, 2, 30, tzinfo=UTC)}  # Monday, inside the window
        rollout = start(prod, demo_images, personas.operator)

        def execute():
            try:
                engine.rollout_execute(rollout.pk, clock=lambda: now["t"])
            finally:
                connection.close()

        thread = threading.Thread(target=execute)
        thread.start()
        try:
            wait_for(lambda: RolloutHost.objects.filter(rollout=rollout, batch=0, step__in=[
                Step.SOAKING, Step.UPDATED]).exists(), timeout=20, what="the canary rebooted")
            now["t"] = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # the window closes: batch 1 stages and waits
            wait_for(lambda: RolloutHost.objects.filter(rollout=rollout, batch=1, step=Step.STAGED).count() == 2,
                     timeout=20, what="batch 1 staged")
            services.rollout_pause(rollout=rollout, user=personas.operator)
            services.rollout_resume(rollout=rollout, user=personas.operator)
            services.rollout_abort(rollout=rollout, user=personas.operator, rollback=True)
        finally:
            thread.join(30)
        rollout.refresh_from_db()
        rows = rows_by_name(rollout)
        assert rollout.status == RolloutStatus.ABORTED
        assert Run.objects.get(pk=rollout.run_id).status == RunStatus.CANCELLED
        assert rows["web-01"].step == Step.ROLLED_BACK and "the rollout was aborted" in rows["web-01"].reason
        assert {rows[n].step for n in ("web-02", "web-03")} == {Step.SKIPPED}
        digests, _ = demo_images
        assert {fleet.host(n).booted_digest for n in names} == {digests["1.0"]["amd64"]}
        assert len(commands_with(fleet, "web-01", "bootc rollback --apply")) == 1
        actions = list(AuditEvent.objects.filter(object_id=str(rollout.pk), object_type="rollouts.rollout")
                       .order_by("seq").values_list("action", flat=True))
        for action in ("rollout.start", "rollout.pause", "rollout.resume", "rollout.abort", "rollout.host_rollback",
                       "rollout.aborted"):
            assert action in actions


class TestUpdateAvailable:
    def test_a_scheduled_check_finds_the_update_without_staging_it_and_the_stage_counts_it(
            self, fleet, demo_images, prod, personas, rollout_settings, client_for):
        digests, _ = demo_images
        make_fleet(fleet, demo_images, ["web-01", "web-02"])
        assert poller.check_updates([fleet.host(n).pk for n in ("web-01", "web-02")]) == {"checked": 2, "failed": 0}
        host = fleet.host("web-01")
        assert host.update_digest == digests["1.1"]["amd64"] and not host.staged_digest
        assert commands_with(fleet, "web-01", "bootc upgrade --quiet --check")
        page = client_for(personas.viewer).get(f"/rollouts/policies/{prod.pk}/").content.decode()
        assert "2 hosts follow prod: <strong>2</strong> with an update available · <strong>0</strong> staged" in page
        fleet_view = client_for(personas.viewer).get("/hosts/fleet/")
        assert {row["stage__name"]: row["update_available"] for row in fleet_view.context["per_stage"]}["prod"] == 2


class TestWaitingHoldsNoWorker:
    SUNDAY_NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)  # the window is Monday 02:00-03:00 in Paris
    MONDAY_0230_PARIS = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)

    def park_outside_the_window(self, fleet, demo_images, prod, personas, rollout_settings):
        rollout_settings.ROLLOUTS_PARK_AFTER_SECONDS = 1
        make_fleet(fleet, demo_images, ["web-01", "web-02"])
        set_policy(prod, personas.admin, window_timezone="Europe/Paris",
                   windows=[{"weekdays": [0], "starts": "02:00", "ends": "03:00"}])
        rollout = start(prod, demo_images, personas.operator)
        run = engine.rollout_execute(rollout.pk, clock=lambda: self.SUNDAY_NOON)
        run.refresh_from_db()
        return rollout, run

    def test_a_rollout_waiting_for_its_window_parks_its_run_and_returns(self, fleet, demo_images, prod, personas,
                                                                          rollout_settings):
        rollout, run = self.park_outside_the_window(fleet, demo_images, prod, personas, rollout_settings)

        # Downloads happened; the reboots wait for the window, and no worker waits with them.
        assert all(r.step == Step.STAGED for r in RolloutHost.objects.filter(rollout=rollout))
        assert run.status == RunStatus.RUNNING and run.is_parked and run.worker == ""
        assert run.phase.startswith("waiting for the maintenance window to open (")
        # Taken up again at the latest after ROLLOUTS_PARK_MAX_SECONDS, to look again (the window is 13 h away).
        assert run.parked_until <= datetime.now(UTC) + timedelta(seconds=rollout_settings.ROLLOUTS_PARK_MAX_SECONDS)
        assert not any(commands_with(fleet, n, "--apply") for n in ("web-01", "web-02"))
        assert "the run is parked, no worker is held" in "\n".join(chunk.text for chunk in run.chunks.all())
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.RUNNING

    def test_the_reaper_leaves_a_parked_run_alone_until_it_is_overdue(self, fleet, demo_images, prod, personas,
                                                                        rollout_settings):
        rollout, run = self.park_outside_the_window(fleet, demo_images, prod, personas, rollout_settings)
        assert run not in Run.objects.stale(now=run.parked_until)
        overdue = run.parked_until + rollout_settings.RUN_STALE_AFTER + timedelta(seconds=1)
        assert run in Run.objects.stale(now=overdue)
        assert portal_services.reap_stale_runs(now=overdue) == [run]
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED and run.exit_reason.startswith("It waited with no worker until ")
        assert [r.pk for r in services.rollouts_resume_orphans()] == [rollout.pk]  # a new run carries on

    def test_beat_takes_up_a_parked_rollout_once_its_time_has_come(self, fleet, demo_images, prod, personas,
                                                                    rollout_settings):
        rollout, run = self.park_outside_the_window(fleet, demo_images, prod, personas, rollout_settings)
        assert services.rollouts_wake_due() == []
        assert services.rollouts_wake_due(now=run.parked_until) == [rollout]

    def test_a_parked_run_is_taken_up_by_one_task_only(self, fleet, demo_images, prod, personas, rollout_settings):
        _, run = self.park_outside_the_window(fleet, demo_images, prod, personas, rollout_settings)
        assert runs.claim(Run.objects.get(pk=run.pk))
        assert not runs.claim(Run.objects.get(pk=run.pk))  # a second wake (countdown and beat) does nothing

    def test_taken_up_inside_the_window_it_reboots_the_hosts_and_completes(self, fleet, demo_images, prod, personas,
                                                                          rollout_settings):
        rollout, run = self.park_outside_the_window(fleet, demo_images, prod, personas, rollout_settings)

        engine.rollout_execute(rollout.pk, clock=lambda: self.MONDAY_0230_PARIS)  # what the woken task does

        rollout.refresh_from_db()
        run.refresh_from_db()
        assert (rollout.status, run.status) == (RolloutStatus.COMPLETED, RunStatus.SUCCEEDED), run.exit_reason
        assert not run.is_parked
        for name in ("web-01", "web-02"):
            assert len(commands_with(fleet, name, "--from-downloaded --apply")) == 1
            assert len(commands_with(fleet, name, "--download-only")) == 1  # the download was not done again

    def test_a_paused_rollout_parks_too(self, fleet, demo_images, prod, personas, rollout_settings):
        rollout_settings.ROLLOUTS_PARK_AFTER_SECONDS = 1
        make_fleet(fleet, demo_images, ["web-01"])
        rollout = start(prod, demo_images, personas.operator)
        services.rollout_pause(rollout=rollout, user=personas.operator)

        run = engine.rollout_execute(rollout.pk)

        run.refresh_from_db()
        assert run.is_parked and run.phase == "waiting for a resume"
        assert RolloutHost.objects.get(rollout=rollout).step == Step.WAITING
