from django.core.management.base import BaseCommand, CommandError

from portal import twofactor
from portal.models import User


class Command(BaseCommand):
    help = ("Remove a user's second factor (authenticator app and backup codes), for someone who lost both. They sign "
            "in with their password alone until they set a new one up; teams that require one keep refusing them "
            "approvals and administration until then. Audited.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--reason", default="", help="Why, for the audit trail (e.g. the ticket or who asked).")

    def handle(self, *args, username, reason, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user is called {username!r}.")
        removed = twofactor.two_factor_remove(user=user, actor=None, reason=reason)
        if not removed:
            self.stdout.write(f"{username} had no second factor; nothing changed.")
            return
        self.stdout.write(self.style.SUCCESS(f"Removed the second factor of {username}. They sign in with their password "
                                             "and set up a new authenticator app on their two-factor page."))
