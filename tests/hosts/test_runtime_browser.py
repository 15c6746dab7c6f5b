"""The host page's "Changed on this host" panel in a real browser, with its diffs of the changed files opened
(screenshots: host-runtime-panel.png, host-runtime-diffs.png)."""

import pytest
from django.utils import timezone

from builds.models import Build
from hosts import runtime
from hosts.models import Host, HostState
from hosts.simruntime import IMAGE_ETC, IMAGE_PACKAGES
from tests.browser import browser_page, log_in, screenshot
from tests.diskimages.rows import succeeded_build

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DIGEST = "sha256:" + "7" * 64


def test_the_panel_lists_the_packages_and_files_changed_on_the_host(personas, portal_server):
    build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    host = Host.objects.create(team=personas.team, name="web-01", address="192.0.2.10", host_key="ssh-ed25519 AAAA",
                               state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=DIGEST, booted_version="1.0",
                               status_at=timezone.now(), status={"usr_overlay": "transient, readWrite"})
    packages = {**IMAGE_PACKAGES, "htop": "3.3.0-5.fc42", "chrony": "4.7-1.fc42"}
    image_chrony = IMAGE_ETC["chrony.conf"].encode()
    host_chrony = image_chrony.replace(b"0.fedora.pool.ntp.org", b"ntp.example.com") + b"keyfile /etc/chrony.keys\n"
    tuning = b"vm.swappiness = 10\n# the metrics agent's key\napi_key = 8f14e45fceea167a5a36dedd4bea2543\n"
    files = {"/etc/chrony.conf": ("M", ("file", len(image_chrony), image_chrony), ("file", len(host_chrony), host_chrony)),
             "/etc/sysctl.d/90-tuning.conf": ("A", None, ("file", len(tuning), tuning)),
             "/etc/motd": ("D", ("file", 8, b"Welcome\n"), None)}
    runtime.runtime_record(host, config_diff="M    chrony.conf\nA    sysctl.d/90-tuning.conf\nD    motd\n",
                           package_output="#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in packages.items()),
                           files=files)
    with browser_page() as page:
        log_in(page, portal_server.url, "operator")
        page.goto(f"{portal_server.url}/hosts/{host.pk}/")
        panel = page.locator("#host-runtime")
        assert "1 package not in the image, 1 package at another version than the image's, 3 files in /etc changed" in (
            panel.inner_text())
        assert panel.locator("code").all_inner_texts()[:2] == ["htop", "chrony"]
        panel.scroll_into_view_if_needed()
        screenshot(page, "host-runtime-panel")
        panel.locator("#runtime-files summary").click()
        page.locator(".etc-diff").first.wait_for()
        diffs = panel.locator("#host-runtime-files").inner_text()
        assert "+server ntp.example.com iburst" in diffs and "+api_key = «masked»" in diffs
        assert "8f14e45f" not in diffs and "-Welcome" in diffs
        page.locator("#host-runtime-files").scroll_into_view_if_needed()
        screenshot(page, "host-runtime-diffs")


def test_the_fleets_common_runtime_changes(personas, portal_server):
    """Screenshot: fleet-runtime.png."""
    from builds.releases.models import Stage

    build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    prod = Stage.objects.get(team=personas.team, name="prod")
    rpm = "#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in IMAGE_PACKAGES.items())
    for i in range(12):
        host = Host.objects.create(team=personas.team, name=f"web-{i:02d}", address="192.0.2.10", stage=prod,
                                   state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=DIGEST,
                                   status_at=timezone.now())
        etc = ("M    chrony.conf\n" if i < 8 else "") + ("A    sysctl.d/90-tuning.conf\n" if i % 3 == 0 else "")
        runtime.runtime_record(host, config_diff=etc, package_output=rpm + ("htop\t3.3.0-5.fc42\tx86_64\n" if i < 2 else ""))
    with browser_page() as page:
        log_in(page, portal_server.url, "operator")
        page.goto(f"{portal_server.url}/hosts/fleet/")
        page.click("text=Changed at runtime")
        group = page.locator(".runtime-group").first
        assert "9 of 12 hosts changed" in group.inner_text() and "on 8 of 12" in group.inner_text()
        screenshot(page, "fleet-runtime")


def test_the_proposed_revision_that_folds_the_changes_back(personas, portal_server):
    """Screenshot: runtime-foldback.png: the diff against the current revision, the files added, what was left out."""
    build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    host = Host.objects.create(team=personas.team, name="web-01", address="192.0.2.10", host_key="ssh-ed25519 AAAA",
                               state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=DIGEST,
                               status_at=timezone.now())
    chrony = IMAGE_ETC["chrony.conf"].replace("0.fedora.pool.ntp.org", "ntp.example.com").encode()
    db = b"host = db.example.com\npassword = S3cret\n"
    rpm = "#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in {**IMAGE_PACKAGES, "htop": "3.3-1"}.items())
    runtime.runtime_record(host, package_output=rpm, config_diff="M    chrony.conf\nA    app/db.conf\nM    machine-id\n",
                           files={"/etc/chrony.conf": ("M", ("file", 9, b"server x\n"), ("file", len(chrony), chrony)),
                                  "/etc/app/db.conf": ("A", None, ("file", len(db), db)),
                                  "/etc/machine-id": ("M", ("file", 2, b"a\n"), ("file", 2, b"b\n"))})
    with browser_page() as page:
        log_in(page, portal_server.url, "developer")
        page.goto(f"{portal_server.url}/hosts/{host.pk}/")
        page.click("text=Propose a revision")
        assert "Save revision r2" in page.locator("button[name=confirm]").inner_text()
        assert "RUN dnf -y install htop" in page.locator(".code-view").inner_text()
        assert "looks like a secret" in page.locator(".foldback-left-out").inner_text()
        screenshot(page, "runtime-foldback")


def test_a_stage_that_forbids_runtime_changes_and_its_non_compliant_host(personas, portal_server):
    """Screenshots: runtime-policy.png (the policy page, with what a reset does and does not undo),
    host-runtime-noncompliant.png (the panel's notice and its buttons), runtime-reset-confirm.png (the confirmation),
    fleet-runtime-noncompliant.png (the fleet view's rule and count per stage)."""
    from builds.releases.models import Stage

    build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    prod = Stage.objects.get(team=personas.team, name="prod")
    rpm = "#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in IMAGE_PACKAGES.items())
    hosts = []
    for i in range(4):
        host = Host.objects.create(team=personas.team, name=f"web-{i:02d}", address="192.0.2.10", stage=prod,
                                   host_key="ssh-ed25519 AAAA", spec_image="registry.example/platform/web-os:prod",
                                   state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=DIGEST, booted_version="1.0",
                                   status_at=timezone.now(),
                                   status={"usr_overlay": "transient, readWrite"} if i == 0 else {})
        runtime.runtime_record(host, config_diff="M    chrony.conf\nA    sysctl.d/90-tuning.conf\n" if i < 2 else "",
                               package_output=rpm + ("htop\t1.0-1.fc42\tx86_64\n" if i == 0 else ""))
        hosts.append(host)
    with browser_page() as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/hosts/stages/{prod.pk}/runtime-policy/")
        page.check("input[name=drift][value=forbidden]")
        page.check("input[name=rollouts][value=skip]")
        page.click("text=Save the policy")
        assert page.locator("#runtime-policy-now").inner_text() == "Forbidden"
        assert "2 non-compliant" in page.locator("main").inner_text()
        screenshot(page, "runtime-policy")

        page.goto(f"{portal_server.url}/hosts/{hosts[0].pk}/")
        panel = page.locator("#host-runtime")
        assert "Non-compliant: prod forbids changes made at runtime" in panel.inner_text()
        panel.scroll_into_view_if_needed()
        screenshot(page, "host-runtime-noncompliant")
        panel.locator("text=Reset to the image").click()
        effect = page.locator(".action-effect").inner_text()
        assert "REBOOTS" in effect and "It does not undo files changed in /etc" in effect
        screenshot(page, "runtime-reset-confirm")

        page.goto(f"{portal_server.url}/hosts/fleet/runtime/")
        group = page.locator(".runtime-group").first
        assert "runtime changes forbidden" in group.inner_text() and "2 of 4 hosts non-compliant" in group.inner_text()
        screenshot(page, "fleet-runtime-noncompliant")
