"""Demo data for `make run`: a team, one user per persona, the stages dev, test and prod, and the image definitions
"web-os" (two revisions) and "web-os-10" (one). Safe to run again.

The rest of the demo (the base images, a build of each revision, promotions to dev and test, a request waiting for the
approver, the web-os 9 → 10 rollout on dev) is slow, so `make run` does it in the background through the worker
(`portal.demo.web_os`, `portal.demo.tasks.demo_advance`) once its processes are up; without podman, skopeo or busybox
it is skipped with a note.
"""

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand
from django.db import transaction

from builds.releases.policy import stages_ensure_default
from portal import services
from portal.demo import web_os as demo
from portal.models import Membership, Role, Team, User

DEMO_TEAM = "Platform"
DEMO_PASSWORD = "portal-demo"
# (username, role in the demo team or None, help-desk flag, superuser flag, what they do)
PERSONAS = [
    ("developer", Role.DEVELOPER, False, False, "writes Containerfiles, builds, requests promotions"),
    ("approver", Role.APPROVER, False, False, "signs off promotions"),
    ("operator", Role.OPERATOR, False, False, "acts on hosts"),
    ("helpdesk", None, True, False, "reads every team's host state, no actions"),
    ("admin", Role.ADMIN, False, True, "team admin and portal superuser"),
]


class Command(BaseCommand):
    help = "Create (or complete) the demo team, personas and stages, and print the logins."

    def add_arguments(self, parser):
        parser.add_argument("--quiet", action="store_true", help="Do not print the logins.")

    @transaction.atomic
    def handle(self, *args, quiet=False, **options):
        team = Team.objects.filter(slug=Team.slug_for(DEMO_TEAM)).first()
        if team is None:
            team = services.team_create(name=DEMO_TEAM, actor=None, description="Demo team created by make run.")
        stages_ensure_default(team=team)
        password_hash = None
        for username, role, helpdesk, superuser, _ in PERSONAS:
            user = User.objects.filter(username=username).first()
            if user is None:
                password_hash = password_hash or make_password(DEMO_PASSWORD)  # one hash for the five: they share it
                user = services.user_create(
                    username=username, password_hash=password_hash, email=f"{username}@example.com",
                    is_helpdesk=helpdesk, is_superuser=superuser,
                )
            if role and not Membership.objects.filter(team=team, user=user).exists():
                services.membership_set(team=team, user=user, role=role, actor=None)
        definition = demo.definition_ensure(team, User.objects.get(username="developer"))
        demo.definition_10_ensure(team, User.objects.get(username="developer"))
        missing = demo.missing_tools()
        if not quiet:
            self.stdout.write(f"Demo team {team.name!r} with stages {', '.join(s.name for s in team.stages.all())}.")
            self.stdout.write(f"Logins (password for all: {DEMO_PASSWORD}):")
            for username, *_, does in PERSONAS:
                self.stdout.write(f"  {username:<10} {does}")
            if missing:
                self.stdout.write(f"Image definition {definition.name!r}: its demo builds are skipped ({', '.join(missing)} "
                                  "not installed; `scripts/system-deps.sh run` installs them).")
            else:
                self.stdout.write(f"Image definitions {definition.name!r} and {demo.DEMO_DEFINITION_10!r}: make run "
                                  "builds and promotes them in the background (worker), then rolls dev's hosts over "
                                  "from 9 to 10; watch it on /builds/ and /rollouts/.")
