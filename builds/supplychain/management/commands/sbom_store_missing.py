"""Store the SBOM of every build that has none stored: `manage.py sbom_store_missing`.

A build's SBOM is stored when the build succeeds. Builds that succeeded before SBOMs were stored, or whose store failed
(object storage refused), have none; their download is made from the package list each time and writes nothing. This
stores them, so they are in object storage and in the next backup like the others. It may run again: a build stored
meanwhile is skipped, one that fails is said and left for the next run."""

from django.core.management.base import BaseCommand, CommandError

from builds.supplychain import services


class Command(BaseCommand):
    help = "Store the SBOM of every succeeded build whose image is still there and that has none stored."

    def handle(self, *args, **options):
        stored, failed = services.sboms_store_missing(log=self.stderr.write)
        self.stdout.write(f"Stored {stored} SBOM(s).")
        if failed:
            raise CommandError(f"{failed} SBOM(s) could not be stored (said above); run it again once object storage "
                               "answers.")
