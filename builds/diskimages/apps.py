from django.apps import AppConfig
from django.core import checks

from portal import registry


class DiskImagesConfig(AppConfig):
    name = "builds.diskimages"
    label = "diskimages"
    verbose_name = "Disk images"

    def ready(self):
        # Build and promotion pages show a digest's disk images without importing this app.
        registry.fragment("disk_images.of_digest", url_name="diskimages:digest_images")
        from .bootmarker import check_marker_setting

        checks.register(check_marker_setting)
        # Models load only once the app registry is ready, i.e. here.
        from portal.models import Action, RunKind

        from . import metrics, services, services_boottests
        from .models import stored_artifacts

        registry.gauge(name="portal_builder_running", documentation="Runs on a builder now, by the work they do.",
                       labels=["builder", "work"], read=metrics.builder_running_conversions)
        # Backups record the artifacts' files, which live outside the database (portal.backups).
        registry.stored_files(stored_artifacts)
        # Image retention (builds.retention) keeps the digests disk images were made from.
        from .keepers import digests_in_use

        registry.digest_keeper(name="disk images", function=digests_in_use, order=20)
        # The REST API's routers for disk images, configurations and kickstarts (portal/api.py mounts them under /api/v1/),
        # imported when the URLconf loads.
        registry.api_router("disk-images/", "builds.diskimages.api.disk_images", order=50)
        registry.api_router("configurations/", "builds.diskimages.api.configurations", order=51)
        registry.api_router("kickstarts/", "builds.diskimages.api.kickstarts", order=52)
        # Releases' gate asks whether a digest passed its boot test (a stage's policy may require one).
        registry.promotion_check(services_boottests.boot_test_gate)
        # The Retry button of a disk image's page posts to the core's portal:run_retry (cancelling is the core's own).
        registry.run_retry(kind=RunKind.DISK_IMAGE, retry=services.disk_image_retry_run, action=Action.DEVELOP)
        # So does a boot test's (Run again).
        registry.run_retry(kind=RunKind.BOOT_TEST, retry=services_boottests.boot_test_retry_run, action=Action.DEVELOP)
