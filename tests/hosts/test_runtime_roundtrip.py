"""The whole way round, with real parts: an image built with podman and pushed to a real registry, promoted by the
portal (skopeo), booted by a simulated host over real SSH; an operator installs a package and edits two files on the
host; the host's panel shows exactly those three changes and the fleet view counts them; the revision the portal
proposes builds for real, is promoted to the host's stage, the host updates to it, and nothing is changed at runtime
any more: the new image ships the package and the two files as the host has them.

The image keeps its package list in dpkg's status file (busybox, the only base image here, runs its own `rpm` applet
before any stand-in) and carries a stand-in `apt-get` that adds to it, because no package repository is reachable
here: the build pipeline reads the list with its usual script, and the simulated host reads the same file from the
image it boots, as a real host reads the image's package database."""

import pytest

from builds import pipeline
from builds import services as build_services
from builds.models import Build, BuildStatus, ContextKind, RegistryCredential
from builds.releases import services as promotions
from builds.releases.apply import promotion_apply_execute
from builds.releases.models import Promotion, Stage
from hosts import actions, drift, poller, runtime
from hosts.models import ActionKind, HostState
from hosts.simbootc import CommandError
from hosts.simruntime import DPKG_STATUS, IMAGE_ETC, IMAGE_PACKAGES
from portal.models import RunStatus
from tests.builds.fixtures import BASE_IMAGE
from tests.hosts.fixtures import booted_state

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

APT_GET = ("#!/bin/sh\n[ \"$1\" = install ] || exit 100\nshift\nfor name in \"$@\"; do case $name in -*) ;; *)\n"
           "printf 'Package: %s\\nStatus: install ok installed\\nVersion: 1.0-1.fc42\\n\\n' \"$name\" "
           f">> /{DPKG_STATUS} ;; esac; done\n").encode()
TUNING = "vm.swappiness = 10\n"


def build(revision, user):
    built = build_services.build_start(revision=revision, user=user)
    assert pipeline.build_execute(built.pk) is None
    built = Build.objects.with_related().get(pk=built.pk)
    assert built.status == BuildStatus.SUCCEEDED, built.run.exit_reason
    return built


def promote(definition, built, stage, user):
    promotion = promotions.promotion_request(definition=definition, build=built, target_stage=stage, user=user,
                                             reason="roll it out")
    promotion.refresh_from_db()
    promotion_apply_execute(promotion.run_id)
    promotion = Promotion.objects.get(pk=promotion.pk)
    assert promotion.status == "applied", promotion.status_note
    drift.refresh_reference_digests(max_age_seconds=0)  # what the stage tag holds now, resolved in the registry


def test_runtime_changes_fold_back_into_the_image_and_clear_once_the_host_updates_to_it(
        fleet, personas, client_for, oci_registry, local_builder, build_settings):
    developer, operator = personas.developer, personas.operator
    RegistryCredential.objects.get_or_create(team=personas.team, registry=oci_registry.address,
                                             defaults={"insecure": True})
    dev = Stage.objects.get(team=personas.team, name="dev")
    definition = build_services.definition_create(team=personas.team, user=developer, name="web-os")
    status = "".join(f"Package: {name}\nStatus: install ok installed\nVersion: {version}\n\n"
                     for name, version in sorted(IMAGE_PACKAGES.items()))
    r1 = build_services.revision_create(
        definition=definition, user=developer, context_kind=ContextKind.FILES,
        context_files={"apt-get": APT_GET, "status": status.encode(), "chrony.conf": IMAGE_ETC["chrony.conf"].encode()},
        containerfile=f"FROM {BASE_IMAGE}\nCOPY apt-get /usr/bin/apt-get\nCOPY status /{DPKG_STATUS}\n"
                      "COPY chrony.conf /etc/chrony.conf\nRUN chmod +x /usr/bin/apt-get\nLABEL containers.bootc=1\n")
    first = build(r1, developer)
    assert (first.package_format, first.packages) == ("dpkg", IMAGE_PACKAGES)  # read by the pipeline's own script
    promote(definition, first, dev, developer)

    fleet.add("web-01", booted_state(f"{definition.repository}:dev", first.digest, "r1"))
    host = fleet.start(stage=dev)["web-01"]
    drift.refresh_reference_digests(max_age_seconds=0)
    poller.poll_hosts([host.pk])
    host.refresh_from_db()
    assert host.state == HostState.UP_TO_DATE, host.state
    assert not runtime.runtime_read(host).has_drift

    # An operator installs a package (in a /usr overlay: /usr is read-only on a bootc host) and edits two files.
    with pytest.raises(CommandError, match="Read-only file system"):
        fleet.fleet.run("web-01", "apt-get", "install", "-y", "htop")
    fleet.fleet.run("web-01", "bootc", "usr-overlay")
    fleet.fleet.run("web-01", "apt-get", "install", "-y", "htop")
    fleet.fleet.edit_etc("web-01", "chrony.conf", "M")
    fleet.fleet.edit_etc("web-01", "sysctl.d/90-tuning.conf", "A", TUNING)
    poller.poll_hosts([host.pk])
    host.refresh_from_db()
    found = runtime.runtime_read(host)
    assert found.packages_added == {"htop": "1.0-1.fc42"} and not found.packages_changed and not found.packages_removed
    assert found.etc_changes == [["M", "/etc/chrony.conf"], ["A", "/etc/sysctl.d/90-tuning.conf"]]
    assert found.usr_overlay

    panel = client_for(personas.viewer).get(f"/hosts/{host.pk}/").content.decode()
    assert "1 package not in the image, 2 files in /etc changed, /usr overlay active" in panel
    fleet_view = client_for(personas.viewer).get("/hosts/fleet/runtime/")
    (group,) = [g for g in fleet_view.context["groups"] if g["stage"] == "dev"]
    assert group["changed"] == 1 and group["hosts"] == 1
    assert {(row["kind"], row["name"], row["n"]) for row in group["top"]} == {
        ("etc", "/etc/chrony.conf", 1), ("etc", "/etc/sysctl.d/90-tuning.conf", 1), ("package_added", "htop", 1),
        ("overlay", "/usr", 1)}

    # A developer reviews the proposed revision and saves it; it builds for real and goes to the host's stage.
    url = f"/hosts/{host.pk}/runtime/propose/"
    proposal = client_for(developer).get(url)
    assert "RUN apt-get install -y --no-install-recommends htop" in proposal.context["proposal"].containerfile
    assert client_for(developer).post(url, {"reviewed": proposal.context["reviewed"]}).status_code == 302
    second = build(definition.revisions.get(number=2), developer)
    assert second.packages == {**IMAGE_PACKAGES, "htop": "1.0-1.fc42"}
    promote(definition, second, dev, developer)
    host.refresh_from_db()
    assert host.state == HostState.DRIFT and host.expected_digest == second.digest

    # The host updates to it (an operator's upgrade and reboot, over SSH), and nothing is changed at runtime any more.
    action = actions.host_action_request(host=host, kind=ActionKind.UPGRADE_APPLY, user=operator)
    actions.host_action_execute(action.pk)
    action.run.refresh_from_db()
    assert action.run.status == RunStatus.SUCCEEDED, action.run.exit_reason
    host.refresh_from_db()
    assert host.booted_digest == second.digest and host.state == HostState.UP_TO_DATE
    found = runtime.runtime_read(host)
    assert (found.etc_changes, found.packages_added, found.packages_removed, found.usr_overlay) == ([], {}, [], "")
    assert not found.has_drift and found.image_packages_known
    assert "Nothing changed on the host since it booted its image." in client_for(personas.viewer).get(
        f"/hosts/{host.pk}/").content.decode()
    (group,) = [g for g in client_for(personas.viewer).get("/hosts/fleet/runtime/").context["groups"]
                if g["stage"] == "dev"]
    assert group["changed"] == 0 and group["top"] == []
