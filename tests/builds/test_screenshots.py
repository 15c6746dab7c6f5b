"""The build and disk image pages as a person sees them, in Chromium, on real data: two real builds of a definition
(podman, busybox base, docker-registry), one failed build, and a conversion of the second build with the stand-in
bootc-image-builder. Screenshots land in test-artifacts/ to be looked at; the assertions check what each one must show.
"""

import pytest

from builds import pipeline, services
from builds.diskimages import pipeline as diskimage_pipeline
from builds.diskimages import services as diskimages
from builds.diskimages import services_presets as presets
from builds.diskimages.models import DiskImage, DiskImageType
from builds.models import Build
from portal.models import RunStatus
from tests.browser import browser_page, log_in, screenshot, settle
from tests.builds.fixtures import BASE_IMAGE

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"


def containerfile(packages, label):
    status = "".join(f"Package: {name}\\nStatus: install ok installed\\nVersion: {version}\\n\\n"
                     for name, version in packages.items())
    return (f"FROM {BASE_IMAGE}\n"
            f"RUN mkdir -p /var/lib/dpkg && printf '{status}' > /var/lib/dpkg/status\n"
            f'LABEL containers.bootc=1 org.example.tier="{label}"\n')


def build_now(revision, user):
    build = services.build_start(revision=revision, user=user)
    pipeline.build_execute(build.pk)
    return Build.objects.with_related().get(pk=build.pk)


@pytest.fixture
def world(in_process_worker, personas, oci_registry, local_builder, build_settings, diskimage_settings):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os",
                                            description="The web tier's OS")
    r1 = services.revision_create(definition=definition, user=personas.developer, message="first",
                                  containerfile=containerfile({"httpd": "2.4.57-5", "curl": "8.0-1", "vim": "9.0-1"},
                                                              "web"))
    old = build_now(r1, personas.developer)
    r2 = services.revision_create(definition=definition, user=personas.developer, message="TLS, no vim",
                                  containerfile=containerfile({"httpd": "2.4.62-1", "curl": "8.0-1",
                                                               "mod_ssl": "2.4.62-1"}, "web-tls"))
    new = build_now(r2, personas.developer)
    r3 = services.revision_create(definition=definition, user=personas.developer, message="a broken step",
                                  containerfile=f"FROM {BASE_IMAGE}\nRUN echo fine\nRUN ls /no/such/dir\n")
    failed = build_now(r3, personas.developer)
    assert old.succeeded and new.succeeded, (old.run.exit_reason, new.run.exit_reason)
    assert failed.status == "failed"
    preset = presets.preset_save(team=personas.team, user=personas.developer, name="ops access",
                                    config={"customizations": {"user": [{"name": "ops", "key": KEY,
                                                                          "groups": ["wheel"]}]}})
    conversion = diskimages.disk_image_request(user=personas.developer, build=new, preset=preset,
                                               types=["qcow2", "raw", "vmdk", "anaconda-iso"])
    diskimage_pipeline.disk_image_execute(conversion.pk)
    conversion = DiskImage.objects.with_related().get(pk=conversion.pk)
    assert conversion.run.status == RunStatus.SUCCEEDED, conversion.run.exit_reason
    return {"old": old, "new": new, "failed": failed, "conversion": conversion}


def visible_in_first_screen(page, selector):
    box = page.locator(selector).first.bounding_box()
    return box is not None and box["y"] < 900


def test_the_build_what_changed_and_disk_image_pages_in_a_browser(personas, portal_server, world, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    old, new, failed, conversion = world["old"], world["new"], world["failed"], world["conversion"]
    with browser_page() as page:
        log_in(page, portal_server.url, "developer")

        page.goto(portal_server.url + new.get_absolute_url())
        settle(page)
        assert "Succeeded" in page.locator("#build-live").inner_text()
        assert new.digest in page.locator("#build-facts").inner_html()
        assert page.get_by_role("link", name="What changed since #1").is_visible()
        assert page.get_by_role("link", name="Convert to disk image").is_visible()
        screenshot(page, "build-page-succeeded")

        page.goto(portal_server.url + failed.get_absolute_url())
        settle(page)
        header = page.locator(".failure-card").inner_text()
        assert "Failed at STEP 3/" in header and "RUN ls /no/such/dir" in header
        assert "No such file or directory" in header
        assert visible_in_first_screen(page, ".failure-card"), "the failure summary is at the top of the page"
        screenshot(page, "build-page-failed")

        page.goto(f"{portal_server.url}/builds/compare/?a={old.pk}&b={new.pk}")
        settle(page)
        text = page.inner_text("body")
        assert "What changed from #1 to #2" in text
        assert "mod_ssl" in text and "vim" in text and "2.4.57-5" in text and "2.4.62-1" in text
        assert "org.example.tier" in text and "web-tls" in text
        assert page.locator(".pkg-table tr.table-success").count() == 1  # mod_ssl added
        assert page.locator(".pkg-table tr.table-danger").count() == 1  # vim removed
        screenshot(page, "build-compare")

        page.goto(f"{portal_server.url}/disk-images/new/?build={new.pk}")
        settle(page)
        assert "web-os · build 2" in page.inner_text("body")
        assert page.locator(".type-tile").count() == len(DiskImageType.choices)
        assert "ops access" in page.inner_text("body")
        screenshot(page, "diskimage-request-form")

        page.goto(portal_server.url + conversion.get_absolute_url())
        settle(page)
        body = page.inner_text("body")
        for artifact in conversion.artifacts.all():
            assert artifact.filename in body and artifact.sha256[:12] in body
        screenshot(page, "diskimage-finished")
