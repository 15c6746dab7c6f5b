from django.apps import AppConfig

from portal import registry


class DiskImagesConfig(AppConfig):
    name = "builds.diskimages"
    label = "diskimages"
    verbose_name = "Disk images"

    def ready(self):
        # Build and promotion pages show a digest's disk images without importing this app.
        registry.fragment("disk_images.of_digest", url_name="diskimages:digest_images")
