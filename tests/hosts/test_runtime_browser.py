"""The host page's "Changed on this host" panel in a real browser (screenshot: host-runtime-panel.png)."""

import pytest
from django.utils import timezone

from builds.models import Build
from hosts import runtime
from hosts.models import Host, HostState
from hosts.simruntime import IMAGE_PACKAGES
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
    runtime.runtime_record(host, config_diff="M    chrony.conf\nA    sysctl.d/90-tuning.conf\nD    motd\n",
                           package_output="#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in packages.items()))
    with browser_page() as page:
        log_in(page, portal_server.url, "operator")
        page.goto(f"{portal_server.url}/hosts/{host.pk}/")
        panel = page.locator("#host-runtime")
        assert "1 package not in the image, 1 package at another version than the image's, 3 files in /etc changed" in (
            panel.inner_text())
        assert panel.locator("code").all_inner_texts()[:2] == ["htop", "chrony"]
        panel.scroll_into_view_if_needed()
        screenshot(page, "host-runtime-panel")
