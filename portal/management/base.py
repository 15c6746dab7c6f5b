"""What the portal's own management commands share."""

from django.core.management.base import BaseCommand


class DatabaseCommand(BaseCommand):
    """A command an operator runs on the database (backup, restore, audit_verify). It runs without Django's system
    checks, which are the web's (they import every URL and the API's schemas, a third of the start-up): quicker, and it
    still runs when the web's configuration is what is broken."""

    requires_system_checks = []
