"""A stage says what it allows of hosts changing at runtime: allowed, warned or forbidden. Forbidden makes a changed host
non-compliant (its page, the host list, the fleet view), rollouts skip it (or update it anyway), and an operator can
reset it to its image: the same digest deployed again over real SSH, which drops the /usr overlay and its packages and
keeps /etc (bootc's three-way merge), then the host tracks its tag again. Every change of policy and every reset is
audited."""

import pytest
from django.core.exceptions import PermissionDenied

from builds.models import Build
from builds.releases.models import Stage
from hosts import actions, poller, runtime, services, simregistry
from hosts.models import ActionKind, DriftInRollouts, Host, RuntimeDrift, RuntimePolicy
from hosts.rollouts import services as rollout_services
from hosts.rollouts.models import RolloutHost, Step
from hosts.simruntime import IMAGE_PACKAGES
from portal import logsink
from portal.models import AuditEvent, RunStatus
from tests.diskimages.rows import succeeded_build
from tests.hosts.fixtures import booted_state

pytestmark = pytest.mark.django_db


@pytest.fixture
def prod(personas):
    return Stage.objects.get(team=personas.team, name="prod")


@pytest.fixture
def changed_host(fleet, demo_images, personas, prod):
    """web-01 on prod boots 1.1 (what prod holds, a digest the portal built); an operator opened a /usr overlay,
    installed htop and edited two files in /etc; the portal read it."""
    digests, base = demo_images
    digest = digests["1.1"]["amd64"]
    build = succeeded_build(personas.team, personas.developer, digest=digest)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    fleet.add("web-01", booted_state(f"{base}:prod", digest, "1.1"))
    fleet.add("web-02", booted_state(f"{base}:prod", digest, "1.1"))
    hosts = fleet.start(stage=prod)
    for name in ("web-01", "web-02"):
        poller.poll_hosts([hosts[name].pk])
    fleet.fleet.run("web-01", "bootc", "usr-overlay")
    fleet.fleet.run("web-01", "dnf", "install", "-y", "htop")
    fleet.fleet.edit_etc("web-01", "chrony.conf", "M")
    fleet.fleet.edit_etc("web-01", "sysctl.d/90-tuning.conf", "A")
    poller.poll_hosts([hosts["web-01"].pk])
    host = fleet.host("web-01")
    runtime.runtime_read(host)
    runtime.runtime_read(fleet.host("web-02"))
    return host


def forbid(prod, personas, rollouts=DriftInRollouts.SKIP):
    return services.runtime_policy_set(stage=prod, user=personas.admin, drift=RuntimeDrift.FORBIDDEN, rollouts=rollouts)


def test_a_stage_allows_runtime_changes_until_its_admin_says_otherwise_and_each_change_is_audited(personas, prod):
    assert runtime.compliance(Host(team=personas.team, stage=prod), None) == (RuntimeDrift.ALLOWED, False)
    with pytest.raises(PermissionDenied):
        services.runtime_policy_set(stage=prod, user=personas.operator, drift=RuntimeDrift.FORBIDDEN)
    forbid(prod, personas)
    services.runtime_policy_set(stage=prod, user=personas.admin, drift=RuntimeDrift.WARNED)
    assert RuntimePolicy.objects.get(stage=prod).drift == RuntimeDrift.WARNED
    events = list(AuditEvent.objects.filter(action="hosts.runtime_policy").order_by("id"))
    assert [e.detail["after"]["drift"] for e in events] == ["forbidden", "warned"]
    assert events[1].detail["before"]["drift"] == "forbidden" and events[1].actor == personas.admin


def test_the_policy_page_is_read_by_the_team_and_changed_by_its_admins(personas, client_for, prod):
    url = f"/hosts/stages/{prod.pk}/runtime-policy/"
    form = {"drift": "forbidden", "rollouts": "skip"}
    assert client_for(None).get(url).status_code == 302  # to the login page
    assert client_for(personas.outsider).get(url).status_code == 404
    assert client_for(personas.outsider).post(url, form).status_code == 404
    page = client_for(personas.viewer).get(url)
    assert page.status_code == 200 and "Team admins change the policy" in page.content.decode()
    assert "It does not undo" in page.content.decode() and "three-way merge" in page.content.decode()
    assert client_for(personas.viewer).post(url, form).status_code == 403
    assert client_for(personas.operator).post(url, form).status_code == 403
    assert not RuntimePolicy.objects.exists()
    saved = client_for(personas.admin).post(url, form)
    assert saved.status_code == 302 and RuntimePolicy.objects.get(stage=prod).drift == RuntimeDrift.FORBIDDEN
    refused = client_for(personas.admin).post(url, {"drift": "sometimes", "rollouts": "skip"})
    assert refused.status_code == 200 and RuntimePolicy.objects.get(stage=prod).drift == RuntimeDrift.FORBIDDEN


def test_a_changed_host_on_a_stage_that_forbids_it_is_non_compliant_on_its_page_the_list_and_the_fleet_view(
        changed_host, personas, client_for, prod):
    viewer = client_for(personas.viewer)
    assert "Non-compliant" not in viewer.get(f"/hosts/{changed_host.pk}/").content.decode()
    services.runtime_policy_set(stage=prod, user=personas.admin, drift=RuntimeDrift.WARNED)
    assert "warns about changes made at runtime" in viewer.get(f"/hosts/{changed_host.pk}/").content.decode()
    forbid(prod, personas)

    page = viewer.get(f"/hosts/{changed_host.pk}/").content.decode()
    assert "Non-compliant:" in page and "prod forbids changes made at runtime" in page
    assert "Reset to the image" not in page  # viewers see it, operators act
    assert "Reset to the image" in client_for(personas.operator).get(f"/hosts/{changed_host.pk}/").content.decode()

    listed = viewer.get("/hosts/?only=noncompliant")
    assert [h.name for h in listed.context["page"].object_list] == ["web-01"]
    assert [h.name for h in Host.objects.non_compliant()] == ["web-01"]
    fleet = viewer.get("/hosts/fleet/runtime/").content.decode()
    assert "runtime changes forbidden" in fleet and "1 of 2 hosts non-compliant" in fleet

    services.runtime_policy_set(stage=prod, user=personas.admin, drift=RuntimeDrift.ALLOWED)
    assert not Host.objects.non_compliant().exists()
    assert "1 of 2 hosts changed" in viewer.get("/hosts/fleet/runtime/").content.decode()


def test_a_rollout_skips_non_compliant_hosts_when_the_policy_says_so(changed_host, demo_images, personas, prod):
    digests, base = demo_images
    forbid(prod, personas)
    rollout = rollout_services.rollout_start(stage=prod, reference=f"{base}:prod", digest=digests["1.2"]["amd64"],
                                             user=personas.operator)
    rows = {row.host.name: row for row in RolloutHost.objects.filter(rollout=rollout).select_related("host")}
    assert rows["web-01"].step == Step.SKIPPED and not rows["web-01"].active
    assert "non-compliant" in rows["web-01"].reason and rows["web-02"].step == Step.WAITING
    audit = AuditEvent.objects.get(action="rollout.start")
    assert audit.detail["skipped_non_compliant"] == ["web-01"] and "skipping 1 non-compliant" in audit.summary


def test_a_rollout_that_skipped_a_non_compliant_host_updates_the_others_and_completes(changed_host, demo_images,
                                                                                     personas, prod, host_settings):
    from hosts.rollouts import engine
    from hosts.rollouts.models import RolloutStatus

    host_settings.ROLLOUTS_TICK_SECONDS = 0.05
    host_settings.ROLLOUTS_REBOOT_WAIT_SECONDS = 4
    host_settings.ROLLOUTS_PARK_AFTER_SECONDS = 10 ** 9  # the engine waits in the test's thread
    digests, base = demo_images
    registry, _, repository = base.partition("/")
    simregistry.push_demo_image(registry, repository, version="1.2", tags=["prod"])  # prod moves to 1.2
    forbid(prod, personas)
    rollout = rollout_services.rollout_start(stage=prod, reference=f"{base}:prod", digest=digests["1.2"]["amd64"],
                                             user=personas.operator)
    run = engine.rollout_execute(rollout.pk)
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.COMPLETED, run.exit_reason
    rows = {row.host.name: row for row in RolloutHost.objects.filter(rollout=rollout).select_related("host")}
    assert (rows["web-01"].step, rows["web-02"].step) == (Step.SKIPPED, Step.UPDATED)
    assert Host.objects.get(pk=changed_host.pk).booted_digest == digests["1.1"]["amd64"]  # kept its digest


def test_a_rollout_updates_non_compliant_hosts_anyway_when_the_policy_says_so(changed_host, demo_images, personas,
                                                                             prod):
    digests, base = demo_images
    forbid(prod, personas, rollouts=DriftInRollouts.RESET)
    rollout = rollout_services.rollout_start(stage=prod, reference=f"{base}:prod", digest=digests["1.2"]["amd64"],
                                             user=personas.operator)
    assert set(RolloutHost.objects.filter(rollout=rollout).values_list("step", flat=True)) == {Step.WAITING}
    assert AuditEvent.objects.get(action="rollout.start").detail["skipped_non_compliant"] == []


def test_a_reset_deploys_the_same_digest_again_drops_the_overlay_keeps_etc_and_tracks_the_tag_again(
        fleet, changed_host, demo_images, personas, client_for, prod):
    digests, base = demo_images
    digest = digests["1.1"]["amd64"]
    forbid(prod, personas)
    url = f"/hosts/{changed_host.pk}/actions/runtime_reset/"
    assert client_for(None).get(url).status_code == 302
    assert client_for(personas.outsider).get(url).status_code == 404
    assert client_for(personas.viewer).get(url).status_code == 403
    assert client_for(personas.viewer).post(url).status_code == 403
    confirm = client_for(personas.operator).get(url).content.decode()
    assert f"{base}@{digest}" in confirm and "REBOOTS" in confirm
    assert "It undoes the /usr overlay and every package installed into it" in confirm
    assert "It does not undo files changed in /etc" in confirm

    action = actions.host_action_request(host=changed_host, kind=ActionKind.RUNTIME_RESET, user=personas.operator)
    assert action.image == f"{base}@{digest}"
    actions.host_action_execute(action.pk)
    action.run.refresh_from_db()
    assert action.run.status == RunStatus.SUCCEEDED, action.run.exit_reason
    log = "\n".join(text for _, text in logsink.lines_after(action.run, 0))
    assert f"bootc switch --quiet --apply {base}@{digest}" in log
    assert f"bootc switch --quiet --mutate-in-place {base}:prod" in log

    host = fleet.host("web-01")
    assert host.booted_digest == digest and host.spec_image == f"{base}:prod"  # the same image, tracking prod again
    assert fleet.sim("web-01").state.boot_id >= 1
    found = runtime.runtime_read(host)
    assert found.packages_added == {} and not found.usr_overlay
    assert found.etc_changes == [["M", "/etc/chrony.conf"], ["A", "/etc/sysctl.d/90-tuning.conf"]]  # /etc stays
    assert runtime.compliance(host, found) == (RuntimeDrift.FORBIDDEN, True)  # still non-compliant: /etc
    assert AuditEvent.objects.filter(action="hosts.action.runtime_reset", object_id=str(host.pk)).exists()
