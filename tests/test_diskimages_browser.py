"""The disk image pages in a real browser (Chromium, Playwright) against a real daphne: the request form, and a finished
conversion with its files. The pictures people look at are saved as test artifacts
(test-artifacts/disk-image-request-form.png, test-artifacts/disk-image-finished.png)."""

import socket
import sys

import pytest

from builds import diskimage_pipeline, diskimages, pipeline, services
from builds.models import Build, DiskImage
from portal.models import RunStatus
from tests.browser import browser_page, log_in, screenshot
from tests.builds_fixtures import BASE_IMAGE, build_settings, local_builder, oci_registry, podman_store  # noqa: F401
from tests.conftest import PortalProcess, free_port, subprocess_env, wait_for
from tests.diskimage_fixtures import bib_standin, diskimage_settings  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONTAINERFILE = f"FROM {BASE_IMAGE}\nRUN echo os > /etc/os-name\nLABEL containers.bootc=1\n"


@pytest.fixture(autouse=True)
def database_next_to_the_browser(monkeypatch):
    """Playwright's sync API keeps an event loop in this thread; the test writes rows between browser steps."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def web(redis_server, tmp_path, settings, diskimage_settings):  # noqa: F811
    """daphne serving the portal with the same artifact storage and builder images as this test."""
    port = free_port()
    env = subprocess_env(redis_server.url, MEDIA_ROOT=settings.MEDIA_ROOT,
                         DISK_IMAGE_BUILDER_IMAGES=",".join(settings.DISK_IMAGE_BUILDER_IMAGES))
    server = PortalProcess("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                   "portal.asgi:application"], env, tmp_path)

    def answers():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(answers, timeout=30, what="daphne to listen")
    server.url = f"http://127.0.0.1:{port}"
    yield server
    server.stop()


@pytest.fixture
def built(personas, oci_registry, local_builder, build_settings, diskimage_settings):  # noqa: F811
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    revision = services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE,
                                        message="web-os 1.0")
    build = services.build_start(revision=revision, user=personas.developer)
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.succeeded, build.run.exit_reason
    return build


def test_screenshots_of_the_request_form_and_a_finished_conversion_with_its_files(personas, built, web):
    """Not a check of details: the pictures of the form and of a finished qcow2 + ISO conversion, with the files'
    names, sizes and checksums on the page."""
    with browser_page(height=1000) as page:
        log_in(page, web.url, "developer")
        page.goto(f"{web.url}/disk-images/new/?build={built.pk}")
        page.check("input[name=types][value=raw]")
        path = screenshot(page, "disk-image-request-form")
        assert path.stat().st_size > 20_000

        disk_image = diskimages.disk_image_request(user=personas.developer, build=built, types=["qcow2", "anaconda-iso"])
        assert diskimage_pipeline.disk_image_execute(disk_image.pk) is None
        disk_image = DiskImage.objects.with_related().get(pk=disk_image.pk)
        assert disk_image.run.status == RunStatus.SUCCEEDED, disk_image.run.exit_reason

        page.goto(f"{web.url}/disk-images/{disk_image.pk}/")
        for artifact in disk_image.artifacts.all():
            assert page.get_by_text(artifact.filename).count() >= 1
        path = screenshot(page, "disk-image-finished")
        assert path.stat().st_size > 20_000
