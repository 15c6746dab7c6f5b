"""Import an OSV advisory feed from a file: `manage.py import_advisories debian-bookworm /mirror/debian/all.zip`.

For a disconnected site, the file comes from a feed mirror (docs/supply-chain.md); an import replaces the feed's
advisories in one transaction, and a file that is not OSV changes nothing."""

from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from builds.supplychain import services


class Command(BaseCommand):
    help = "Import an OSV feed (a JSON record, a JSON list, or a zip of records) from a file."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The feed's name, e.g. debian-bookworm.")
        parser.add_argument("path", help="The OSV file.")

    def handle(self, *args, name, path, **options):
        file = Path(path)
        try:
            size = file.stat().st_size
            if size > settings.SUPPLY_CHAIN_FEED_MAX_BYTES:
                raise CommandError(f"{path} is {size:,} bytes; the portal takes feeds up to "
                                   f"{settings.SUPPLY_CHAIN_FEED_MAX_BYTES:,} (SUPPLY_CHAIN_FEED_MAX_BYTES).")
            data = file.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
        try:
            feed = services.feed_import(name=name, data=data, source=str(file), user=None)
        except ValidationError as exc:
            raise CommandError(f"Nothing was imported: {' '.join(exc.messages)}") from None
        self.stdout.write(f"Imported {feed.advisory_count} advisories into {feed.name}.")
