"""What changed on a host since it booted its image, read over real SSH from a simulated host that answers the same
commands as a real bootc host: an operator installs a package in a /usr overlay and edits two files in /etc, and the
portal shows exactly those three changes; a reboot drops the overlay's package and keeps the /etc changes."""

import pytest

from builds.models import Build
from hosts import poller, runtime
from hosts.models import EventKind, HostEvent, HostRuntime
from hosts.simbootc import CommandError
from hosts.simruntime import IMAGE_PACKAGES
from tests.diskimages.rows import succeeded_build
from tests.helpers import wait_for
from tests.hosts.fixtures import booted_state

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "7" * 64


@pytest.fixture
def web01(fleet, personas):
    """A simulated host booting a digest the portal built, whose package list it read (the simulator's image)."""
    build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    fleet.add("web-01", booted_state("registry.example/web-os:prod", DIGEST, "1.0"))
    host = fleet.start()["web-01"]
    poller.poll_hosts([host.pk])
    return fleet.host("web-01")


def test_a_host_nobody_touched_has_nothing_changed(web01):
    found = runtime.runtime_read(web01)
    assert (found.error, found.etc_total, found.packages_added, found.has_drift) == ("", 0, {}, False)
    assert found.image_packages_known
    assert runtime.summary(found) == "Nothing changed on the host since it booted its image."
    assert not HostEvent.objects.filter(host=web01, kind=EventKind.RUNTIME_CHANGED).exists()


def test_an_installed_package_and_two_edited_files_are_exactly_what_the_portal_shows(fleet, web01):
    with pytest.raises(CommandError, match="read-only"):  # dnf refuses on an immutable /usr, as on a real host
        fleet.fleet.run("web-01", "dnf", "install", "-y", "htop")
    fleet.fleet.run("web-01", "bootc", "usr-overlay")
    fleet.fleet.run("web-01", "dnf", "install", "-y", "htop")
    fleet.fleet.edit_etc("web-01", "chrony.conf", "M")
    fleet.fleet.edit_etc("web-01", "sysctl.d/90-tuning.conf", "A")
    poller.poll_hosts([web01.pk])  # the status now says the overlay is on
    web01.refresh_from_db()

    found = runtime.runtime_read(web01)
    assert found.packages_added == {"htop": "1.0-1.fc42"}
    assert found.packages_changed == {} and found.packages_removed == []
    assert found.etc_changes == [["M", "/etc/chrony.conf"], ["A", "/etc/sysctl.d/90-tuning.conf"]]
    assert found.usr_overlay
    assert runtime.summary(found).startswith("1 package not in the image, 2 files in /etc changed, /usr overlay active")
    event = HostEvent.objects.get(host=web01, kind=EventKind.RUNTIME_CHANGED)
    assert event.detail["packages_added"] == ["htop"] and event.detail["etc_total"] == 2

    runtime.runtime_read(web01)  # read again, nothing new: no second event, no rewrite
    assert HostEvent.objects.filter(host=web01, kind=EventKind.RUNTIME_CHANGED).count() == 1

    fleet.fleet.run("web-01", "systemctl", "reboot")  # the overlay and its package go; /etc keeps its changes
    wait_for(lambda: poller.poll_hosts([web01.pk])["failed"] == 0 and not fleet.sim("web-01").rebooting, timeout=30,
             what="the host back from its reboot")
    web01.refresh_from_db()
    found = runtime.runtime_read(web01)
    assert found.packages_added == {} and not found.usr_overlay and found.etc_total == 2
    assert HostEvent.objects.filter(host=web01, kind=EventKind.RUNTIME_CHANGED).count() == 2


def test_without_the_images_package_list_only_etc_is_compared(fleet, personas):
    fleet.add("db-01", booted_state("registry.example/db-os:prod", "sha256:" + "8" * 64, "1.0"))
    host = fleet.start()["db-01"]
    fleet.fleet.edit_etc("db-01", "/etc/hosts", "M")
    found = runtime.runtime_read(host)
    assert not found.image_packages_known and found.packages_added == {}
    assert found.etc_changes == [["M", "/etc/hosts"]]


def test_an_unreachable_host_keeps_its_last_reading_and_says_why(fleet, web01):
    fleet.fleet.edit_etc("web-01", "chrony.conf")
    runtime.runtime_read(web01)
    fleet.fleet.set_fault("web-01", "down")
    found = runtime.runtime_read(web01)
    assert found.error and found.etc_total == 1


def test_thousands_of_changed_files_are_cut_to_a_list_and_a_count():
    text = "".join(f"M    app/{i:05d}.conf\n" for i in range(5000)) + "warning: something ostree says\n"
    changes, total = runtime.parse_config_diff(text)
    assert total == 5000 and len(changes) == runtime.ETC_LIST_MAX and changes[0] == ["M", "/etc/app/00000.conf"]


def test_the_package_comparison_names_added_changed_and_removed():
    added, changed, removed = runtime.compare_packages({"a": "1", "b": "2", "new": "9"}, {"a": "1", "b": "1", "gone": "3"})
    assert (added, changed, removed) == ({"new": "9"}, {"b": ["2", "1"]}, ["gone"])


def test_hosts_due_are_ssh_hosts_not_read_within_the_hour(web01):
    assert web01.pk in set(runtime.hosts_due())
    runtime.runtime_read(web01)
    assert web01.pk not in set(runtime.hosts_due())
    assert HostRuntime.objects.filter(host=web01).count() == 1


def test_reading_now_is_for_operators_and_the_page_shows_what_changed(fleet, web01, personas, client_for):
    url = f"/hosts/{web01.pk}/runtime/read/"
    assert client_for(None).post(url).status_code == 302  # to the login page
    assert client_for(personas.outsider).post(url).status_code == 404
    assert client_for(personas.helpdesk).post(url).status_code == 403
    assert client_for(personas.viewer).post(url).status_code == 403
    assert client_for(personas.operator).post(url).status_code == 302
    assert client_for(personas.viewer).get(url).status_code == 405

    fleet.fleet.edit_etc("web-01", "ssh/sshd_config", "M")
    runtime.runtime_read(web01)
    page = client_for(personas.viewer).get(f"/hosts/{web01.pk}/").content.decode()
    assert "1 file in /etc changed" in page and "/etc/ssh/sshd_config" in page
    assert "Read now" not in page  # read-only users see what changed, and no button
    assert "Read now" in client_for(personas.operator).get(f"/hosts/{web01.pk}/").content.decode()
    helpdesk = client_for(personas.helpdesk).get(f"/hosts/{web01.pk}/").content.decode()
    assert "/etc/ssh/sshd_config" in helpdesk  # help desk reads host state


def test_each_changed_file_is_diffed_against_the_images_version_with_secrets_masked(fleet, web01):
    fleet.fleet.edit_etc("web-01", "chrony.conf", "M", "server ntp.example.com iburst\ndriftfile /var/lib/chrony/drift\n"
                                                       "makestep 1.0 3\nrtcsync\nkeyfile /etc/chrony.keys\n")
    fleet.fleet.edit_etc("web-01", "app/db.conf", "A", "host = db.example.com\npassword = S3cret-Pa55\n")
    fleet.fleet.edit_etc("web-01", "motd", "D")
    fleet.fleet.edit_etc("web-01", "shadow", "M", "root:$6$abcdefgh$0123456789abcdefghij:19000::::::\n")
    fleet.fleet.edit_etc("web-01", "pki/ca.der", "A", "0\x82\x00\x01binary")
    found = runtime.runtime_read(web01)
    files = found.etc_files
    assert "-server 0.fedora.pool.ntp.org iburst" in files["/etc/chrony.conf"]["diff"]
    assert "+server ntp.example.com iburst" in files["/etc/chrony.conf"]["diff"]
    assert "+keyfile /etc/chrony.keys" in files["/etc/chrony.conf"]["diff"]
    assert "+password = «masked»" in files["/etc/app/db.conf"]["diff"] and files["/etc/app/db.conf"]["masked"] == 1
    assert "+++ /dev/null" in files["/etc/motd"]["diff"] or files["/etc/motd"]["diff"] == ""
    assert files["/etc/shadow"]["secret_file"] and "never read" in files["/etc/shadow"]["why"]
    assert files["/etc/pki/ca.der"]["why"].startswith("a binary file")
    stored = str(HostRuntime.objects.filter(host=web01).values_list("etc_files", flat=True).get())
    stored += str(list(HostEvent.objects.filter(host=web01).values_list("detail", flat=True)))
    assert "S3cret-Pa55" not in stored and "0123456789abcdefghij" not in stored
    assert not [line for line in fleet.sim("web-01").commands if "/etc/shadow" in line]  # never asked for


def test_the_diffs_are_for_the_teams_members_and_help_desk_sees_only_the_paths(fleet, web01, personas, client_for):
    fleet.fleet.edit_etc("web-01", "app/db.conf", "A", "host = db.example.com\npassword = S3cret-Pa55\n")
    runtime.runtime_read(web01)
    url = f"/hosts/{web01.pk}/runtime/files/"
    assert client_for(None).get(url).status_code == 302  # to the login page
    assert client_for(personas.outsider).get(url).status_code == 404
    assert client_for(personas.helpdesk).get(url).status_code == 403
    for user in (personas.viewer, personas.operator):
        page = client_for(user).get(url).content.decode()
        assert "+password = «masked»" in page and "S3cret-Pa55" not in page and "+host = db.example.com" in page
    fragment = client_for(personas.viewer).get(url, HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('<div id="host-runtime-files">') and "<nav" not in fragment
    helpdesk = client_for(personas.helpdesk).get(f"/hosts/{web01.pk}/").content.decode()
    assert "/etc/app/db.conf" in helpdesk and url not in helpdesk and "shown to the team's members" in helpdesk
    assert url in client_for(personas.viewer).get(f"/hosts/{web01.pk}/").content.decode()
