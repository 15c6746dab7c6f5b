"""The personas: the suite's cast of users and teams, made once per test database."""

import pytest

from tests.plugins.database import session_has_a_test_database

_password_hashes = {}


def make_user(username, *, helpdesk=False, superuser=False, password="correct horse battery"):
    """A user with a real password hash (computed once per password: hashing is slow on purpose)."""
    from django.contrib.auth.hashers import make_password

    from portal.models import User

    if password not in _password_hashes:
        _password_hashes[password] = make_password(password)
    user = User(username=username, email=f"{username}@example.com", is_helpdesk=helpdesk, is_superuser=superuser,
                is_staff=superuser, password=_password_hashes[password])
    user.save()
    return user


def make_team(name, **members):
    """make_team("Platform", developer=user, viewer=other) creates the team and its memberships."""
    from builds.releases.policy import stages_ensure_default
    from portal.models import Membership, Team

    team = Team.objects.create(name=name, slug=Team.slug_for(name))
    stages_ensure_default(team=team)
    for role, user in members.items():
        Membership.objects.create(team=team, user=user, role=role)
    return team


class Personas:
    """The suite's cast: a team ("Platform") with one member per role, help-desk, a superuser, and an outsider who is a
    developer in another team ("Other").

    The cast is made once per test database (`make_personas`), not once per test: each test reads it fresh (two
    queries instead of some thirty inserts), and what a test changes in it is rolled back after the test, or flushed
    and made again after a transactional one."""

    USERNAMES = {"viewer": "viewer", "developer": "developer", "approver": "approver", "approver2": "approver2",
                 "operator": "operator", "admin": "teamadmin", "helpdesk": "helpdesk", "superuser": "root",
                 "outsider": "outsider"}
    TEAMS = {"team": "Platform", "other_team": "Other"}

    def __init__(self):
        from portal.models import Team, User

        users = User.objects.in_bulk(self.USERNAMES.values(), field_name="username")
        teams = Team.objects.in_bulk([Team.slug_for(name) for name in self.TEAMS.values()], field_name="slug")
        for attribute, username in self.USERNAMES.items():
            setattr(self, attribute, users[username])
        for attribute, name in self.TEAMS.items():
            setattr(self, attribute, teams[Team.slug_for(name)])


def make_personas():
    """Put the cast in the test database, unless it is there."""
    from portal.models import Membership, User

    if User.objects.filter(username=Personas.USERNAMES["viewer"]).exists():
        return
    users = {attribute: make_user(username, helpdesk=attribute == "helpdesk", superuser=attribute == "superuser")
             for attribute, username in Personas.USERNAMES.items()}
    team = make_team("Platform", **{role: users[role] for role in ("viewer", "developer", "approver", "operator",
                                                                    "admin")})
    Membership.objects.create(team=team, user=users["approver2"], role="approver")
    make_team("Other", developer=users["outsider"])


def _personas_again_after_a_flush(sender, using="default", **kwargs):
    """A transactional test ends with a flush of every table, and Django's flush then sends post_migrate."""
    if sender.label == "portal" and using == "default":
        make_personas()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker, quick_password_hashing, request):
    """pytest-django's test database, with the personas in it."""
    from django.db.models.signals import post_migrate

    if not session_has_a_test_database(request.session):
        yield
        return
    with django_db_blocker.unblock():
        make_personas()
    post_migrate.connect(_personas_again_after_a_flush, dispatch_uid="tests.personas")
    yield
    post_migrate.disconnect(dispatch_uid="tests.personas")


@pytest.fixture
def personas(db):
    return Personas()


@pytest.fixture
def without_personas(db):
    """A test that needs the database as a fresh install has it (the demo seed makes its own team and users) deletes
    the cast first; it is back after the test."""
    from portal.models import Team, User

    Team.objects.filter(slug__in=[Team.slug_for(name) for name in Personas.TEAMS.values()]).delete()
    User.objects.filter(username__in=Personas.USERNAMES.values()).delete()


@pytest.fixture
def client_for(client):
    """client_for(user) -> a test client logged in as user (None: anonymous)."""
    from django.test import Client

    def make(user):
        c = Client()
        if user is not None:
            c.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        return c

    return make
