"""`make run`'s demo data: `seed_demo` (fast, idempotent) and the background part (`portal.demo.web_os`: the base image, real
builds pushed to a real registry, real promotions), run here in-process with eager tasks."""

import io
import time

import pytest
from django.core.management import call_command

from builds.models import Build, ImageDefinition, Revision
from builds.releases.models import Promotion, PromotionStatus, StageHistory
from portal.demo import web_os as demo
from portal.demo.management.commands.run_portal import demo_blocker
from portal.demo.management.commands.seed_demo import DEMO_PASSWORD, PERSONAS
from portal.models import Membership, Team, User
from tests.builds.fixtures import skopeo_inspect


def seed(*args):
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def counts():
    return (Team.objects.count(), User.objects.count(), Membership.objects.count(), ImageDefinition.objects.count(),
            Revision.objects.count(), Build.objects.count(), Promotion.objects.count(), StageHistory.objects.count())


def test_without_podman_the_seed_skips_the_builds_with_a_note_and_changes_nothing_the_second_time(
        without_personas, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman, skopeo or busybox here
    first = seed()
    assert "demo builds are skipped (podman, skopeo, busybox, tar not installed" in first
    assert "developer" in first and "portal-demo" in first
    for username, *_ in PERSONAS:
        assert User.objects.get(username=username).check_password(DEMO_PASSWORD), username
    definition = ImageDefinition.objects.get(team__slug="platform", name="web-os")
    assert sorted(definition.revisions.values_list("number", flat=True)) == [1, 2]
    assert definition.revisions.get(number=1).containerfile.count(f"FROM {demo.DEMO_BASE}") == 1
    before = counts()
    seed("--quiet")
    assert counts() == before
    assert "podman" in demo_blocker(registry_started=True)  # make run says why web-os is not built


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_demo_builds_pushes_and_promotes_web_os_for_real_then_switches_devs_hosts_to_10_pausing_after_the_canary(
        without_personas, local_builder, build_settings, oci_registry, eager_tasks, settings):
    """One test, as make run does it: the builds, pushes and promotions (some 15 s of real podman builds), then, on
    what they made, the 9 → 10 rollout. Two tests each spent those 15 s building the same three images."""
    the_demo_builds_pushes_and_promotes_web_os_for_real()
    the_demo_switches_devs_hosts_from_web_os_9_to_10_and_pauses_after_the_canary(eager_tasks, settings)


def the_demo_builds_pushes_and_promotes_web_os_for_real():
    seed("--quiet")
    notes = []
    for _ in range(20):
        done, note = demo.advance()
        notes.append(note)
        if done:
            break
    assert notes[-1] == "the demo is ready", notes

    definition = ImageDefinition.objects.get(team__slug="platform", name="web-os")
    first, second = Build.objects.with_related().filter(definition=definition).order_by("revision__number")
    assert first.succeeded and second.succeeded and first.digest != second.digest
    assert first.run.started_by.username == "developer" and first.labels["org.opencontainers.image.version"] == "1.0"
    team = definition.team
    dev, test = team.stages.get(name="dev"), team.stages.get(name="test")
    assert StageHistory.objects.current(test, definition).digest == first.digest
    assert StageHistory.objects.current(dev, definition).digest == second.digest
    assert StageHistory.objects.filter(stage=dev, definition=definition, digest=first.digest).exists()
    # The registry's stage tags hold exactly those digests.
    assert skopeo_inspect(f"{definition.repository}:test")["Digest"] == first.digest
    assert skopeo_inspect(f"{definition.repository}:dev")["Digest"] == second.digest
    # r1's promotion to test was approved by the approver; r2's waits in the approver's inbox.
    applied = Promotion.objects.get(target_stage=test, digest=first.digest)
    assert applied.status == PromotionStatus.APPLIED
    assert list(applied.approvals.values_list("approver__username", flat=True)) == ["approver"]
    waiting = Promotion.objects.get(target_stage=test, digest=second.digest)
    assert waiting.status == PromotionStatus.PENDING
    assert list(Promotion.objects.waiting_for(User.objects.get(username="approver"))) == [waiting]

    # Again, even after someone built r2 once more: nothing is built, asked or moved twice.
    from portal import services as portal_services

    run = portal_services.run_create(kind="build", title="a rebuild", team=team)
    portal_services.run_finish(run, status="succeeded")
    Build.objects.create(definition=definition, revision=second.revision, number=3, run=run, platform=second.platform,
                         repository=definition.repository, digest="sha256:" + "9" * 64)
    before = counts()
    assert demo.advance() == (True, "the demo is ready")
    seed("--quiet")
    assert counts() == before
    definition_, held, versions = demo.stage_digests(team)
    assert held == {"dev": second.digest, "test": first.digest}
    assert versions == {"1.0": first.digest, "1.1": second.digest}
    # web-os on the next major release (a stream10 base) is built and in dev, for the 9 → 10 rollout.
    ten = ImageDefinition.objects.get(team=team, name=demo.DEMO_DEFINITION_10)
    tenth = Build.objects.get(definition=ten)
    assert tenth.succeeded and tenth.labels["org.opencontainers.image.version"] == "10.0"
    assert f"FROM {demo.DEMO_BASE_10}" in tenth.revision.containerfile
    assert StageHistory.objects.current(dev, ten).digest == tenth.digest


def the_demo_switches_devs_hosts_from_web_os_9_to_10_and_pauses_after_the_canary(eager_tasks, settings):
    import threading

    from django.db import connection

    from hosts import poller
    from hosts.rollouts import engine
    from hosts.rollouts.models import Rollout, RolloutHost, RolloutStatus, Step
    from hosts.services import team_key_ensure
    from tests.hosts.fixtures import FleetForTests, booted_state

    assert demo.advance() == (True, demo.READY)  # built and promoted above
    team = Team.objects.get(slug="platform")
    web_os = ImageDefinition.objects.get(team=team, name="web-os")
    first = Build.objects.filter(definition=web_os).order_by("revision__number").first()
    tenth = Build.objects.get(definition__name=demo.DEMO_DEFINITION_10)
    assert demo.nine_to_ten() == (False, "waiting for the fleet's dev hosts (make run's demo_fleet) to be read")

    # make run's fleet: dev's hosts boot web-os 1.0 (stream9) and track its dev tag.
    fleet = FleetForTests(team, team_key_ensure(team=team))
    for name in ("api-01", "db-01"):
        fleet.add(name, booted_state(f"{web_os.repository}:dev", first.digest, "1.0", first.architecture or "amd64"))
    try:
        hosts = fleet.start(stage=team.stages.get(name="dev"))
        poller.poll_hosts([h.pk for h in hosts.values()])
        eager_tasks.conf.task_always_eager = False  # the rollout's task waits in the broker: this test runs it
        settings.ROLLOUTS_TICK_SECONDS, settings.HOSTS_REBOOT_POLL_SECONDS = 0.05, 0.1

        assert demo.nine_to_ten() == (False, "started the web-os 9 → 10 rollout on dev")
        rollout = Rollout.objects.get(stage__name="dev", switch=True)
        assert rollout.reference == f"{tenth.definition.repository}:dev" and rollout.digest == tenth.digest

        def execute():
            try:
                engine.rollout_execute(rollout.pk)
            finally:
                connection.close()

        thread = threading.Thread(target=execute)
        thread.start()
        notes = []
        try:
            for _ in range(600):
                done, note = demo.nine_to_ten()
                notes.append(note)
                if done:
                    break
                time.sleep(0.1)
        finally:
            thread.join(60)
        assert notes[-1] == f"{demo.READY}: the web-os 9 → 10 rollout is paused after its canary", notes[-3:]
        rollout.refresh_from_db()
        assert rollout.status == RolloutStatus.PAUSED and rollout.run.is_parked
        canary = RolloutHost.objects.get(rollout=rollout, batch=0)
        assert canary.host.name == "api-01" and canary.step == Step.UPDATED
        state = fleet.sim("api-01").state
        assert (state.booted.digest, state.spec_image) == (tenth.digest, rollout.reference)
        assert state.rollback.digest == first.digest and state.rollback.pinned  # web-os 9 kept as the fallback
        assert demo.nine_to_ten() == (True, demo.READY)  # nothing started or paused twice
    finally:
        fleet.stop()
