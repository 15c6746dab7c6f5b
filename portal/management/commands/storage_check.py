from django.core.management.base import BaseCommand, CommandError

from portal import objectstore


class Command(BaseCommand):
    help = ("Write, read back and delete a probe object in the portal's object storage (OBJECT_STORAGE, S3_*); a "
            "failure names the setting to fix.")

    def handle(self, *args, **options):
        try:
            where = objectstore.check()
        except objectstore.StorageUnavailable as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Object storage works: wrote, read and deleted a probe object in {where}; "
                                             f"downloads are served by {objectstore.downloads_via()}."))
