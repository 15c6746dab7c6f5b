"""Rollouts that switch hosts to another stream (another repository), on the simulated fleet over real SSH and the
real registry: download only, then reboot into it; the booted deployment pinned first as the fallback; a host that
cannot pin it, or that stages another digest than asked for, fails with the reason; a repository outside the team is
refused."""

import pytest

from builds.models import ImageDefinition
from hosts import drift
from hosts.connect import session_for, target_for
from hosts.models import EventKind, HostEvent
from hosts.rollouts import engine, services
from hosts.rollouts.models import Step
from portal import ssh
from portal.formatting import short_digest
from tests.hosts.rollout_steps import commands_with, make_fleet, rows_by_name, set_policy

pytestmark = pytest.mark.django_db


class TestSwitchingToAnotherStream:
    def test_hosts_switch_to_the_new_stream_download_only_then_reboot_into_it(
            self, fleet, demo_images, prod, personas, rollout_settings, oci_registry):
        from hosts import simregistry

        _, base = demo_images
        ten = simregistry.push_demo_image(oci_registry.address, "platform/web-os-10", version="10.0", tags=["prod"])
        ImageDefinition.objects.create(team=personas.team, name="web-os-10",
                                       repository=f"{oci_registry.address}/platform/web-os-10")
        make_fleet(fleet, demo_images, ["web-01"])
        set_policy(prod, personas.admin)
        target = f"{oci_registry.address}/platform/web-os-10:prod"
        rollout = services.rollout_start(stage=prod, reference=target, digest=ten["amd64"], switch=True,
                                         user=personas.operator)
        engine.rollout_execute(rollout.pk)
        row = rows_by_name(rollout)["web-01"]
        assert row.step == Step.UPDATED, row.reason
        assert commands_with(fleet, "web-01", f"bootc switch --quiet --download-only {target}")
        assert fleet.sim("web-01").state.spec_image == target
        host = fleet.host("web-01")
        assert host.booted_digest == ten["amd64"]
        assert host.tracked_image == target  # the portal's record follows: drift is judged against the new stream

    def test_the_booted_deployment_is_pinned_first_and_stays_a_fallback_after_the_next_update(
            self, fleet, demo_images, prod, personas, rollout_settings, oci_registry):
        from hosts import simregistry

        digests, _ = demo_images
        ten = simregistry.push_demo_image(oci_registry.address, "platform/web-os-10", version="10.0", tags=["prod"])
        ImageDefinition.objects.create(team=personas.team, name="web-os-10",
                                       repository=f"{oci_registry.address}/platform/web-os-10")
        make_fleet(fleet, demo_images, ["web-01", "web-02"])
        with session_for(target_for(fleet.host("web-02"))) as connection:  # web-02 has 1.1 staged: it is index 0
            assert connection.run(ssh.bootc_upgrade(download_only=True)).exit_status == 0
        set_policy(prod, personas.admin)
        target = f"{oci_registry.address}/platform/web-os-10:prod"
        rollout = services.rollout_start(stage=prod, reference=target, digest=ten["amd64"], switch=True,
                                         user=personas.operator)
        engine.rollout_execute(rollout.pk)

        assert {row.step for row in rows_by_name(rollout).values()} == {Step.UPDATED}
        assert commands_with(fleet, "web-01", "ostree admin pin 0")
        assert commands_with(fleet, "web-02", "ostree admin pin 1")  # the booted one, not the staged one
        for name in ("web-01", "web-02"):
            state = fleet.sim(name).state
            assert (state.booted.digest, state.rollback.digest) == (ten["amd64"], digests["1.0"]["amd64"])
            assert state.rollback.pinned
            host = fleet.host(name)
            assert HostEvent.objects.filter(host=host, kind=EventKind.PINNED).exists()
            assert HostEvent.objects.filter(host=host, detail__rollout=rollout.pk,
                                            summary__contains="as the fallback before the switch").exists()

        # The next update of the new stream would prune an unpinned 9: the pinned one stays, listed by bootc.
        newer = simregistry.push_demo_image(oci_registry.address, "platform/web-os-10", version="10.1", tags=["prod"])
        drift.reference_digests_set(reference=target, digests=newer)
        upgrade = services.rollout_start(stage=prod, reference=target, digest=newer["amd64"], user=personas.operator)
        engine.rollout_execute(upgrade.pk)
        assert not commands_with(fleet, "web-01", "ostree admin pin 1")  # an upgrade in the same stream pins nothing
        host = fleet.host("web-01")
        assert host.booted_digest == newer["amd64"] and not host.drifting
        assert [entry["image"]["digest"] for entry in host.status["other_deployments"]] == [digests["1.0"]["amd64"]]

    def test_a_host_whose_deployment_cannot_be_pinned_is_skipped_with_the_reason(
            self, fleet, demo_images, prod, personas, rollout_settings, oci_registry):
        from hosts import simregistry

        ten = simregistry.push_demo_image(oci_registry.address, "platform/web-os-10", version="10.0", tags=["prod"])
        ImageDefinition.objects.create(team=personas.team, name="web-os-10",
                                       repository=f"{oci_registry.address}/platform/web-os-10")
        make_fleet(fleet, demo_images, ["web-01"])
        fleet.fleet.set_fault("web-01", "pin_fails", True)  # e.g. a read-only /sysroot, or no ostree on PATH
        set_policy(prod, personas.admin)
        rollout = services.rollout_start(stage=prod, reference=f"{oci_registry.address}/platform/web-os-10:prod",
                                         digest=ten["amd64"], switch=True, user=personas.operator)
        engine.rollout_execute(rollout.pk)
        row = rows_by_name(rollout)["web-01"]
        assert row.step == Step.SKIPPED
        assert row.reason.startswith("pre-flight: could not pin the booted deployment as a fallback (`ostree admin "
                                     "pin`): error: ")
        assert not commands_with(fleet, "web-01", "bootc switch")

    def test_a_host_that_stages_another_digest_than_the_rollout_asked_for_fails_with_what_it_staged(
            self, fleet, demo_images, prod, personas, rollout_settings, oci_registry):
        from hosts import simregistry

        digests, _ = demo_images
        ten = simregistry.push_demo_image(oci_registry.address, "platform/web-os-10", version="10.0", tags=["prod"])
        ImageDefinition.objects.create(team=personas.team, name="web-os-10",
                                       repository=f"{oci_registry.address}/platform/web-os-10")
        make_fleet(fleet, demo_images, ["web-01"])
        set_policy(prod, personas.admin)
        target = f"{oci_registry.address}/platform/web-os-10:prod"
        rollout = services.rollout_start(stage=prod, reference=target, digest=ten["amd64"], switch=True,
                                         user=personas.operator)
        moved = simregistry.push_demo_image(oci_registry.address, "platform/web-os-10", version="10.1", tags=["prod"])

        engine.rollout_execute(rollout.pk)

        row = rows_by_name(rollout)["web-01"]
        assert row.step == Step.FAILED
        assert row.reason == (
            f"after `bootc switch --download-only`, its bootc status shows {target} at {short_digest(moved['amd64'])} "
            f"(10.1) staged, not the rollout's target {target} at {short_digest(ten['amd64'])}: its tag moved since "
            "the rollout started: roll out what it holds now in a new rollout")
        assert not commands_with(fleet, "web-01", "--apply")  # never rebooted into what it was not asked to run
        assert fleet.host("web-01").booted_digest == digests["1.0"]["amd64"]

    def test_a_switch_to_a_repository_that_is_not_the_teams_is_refused(self, fleet, demo_images, prod, personas,
                                                                       rollout_settings):
        make_fleet(fleet, demo_images, ["web-01"])
        with pytest.raises(services.RolloutError, match="is not an image of Platform"):
            services.rollout_start(stage=prod, reference="registry.example.com/evil/os:latest",
                                   digest="sha256:" + "e" * 64, switch=True, user=personas.operator)
