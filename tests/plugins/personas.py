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

    The cast is made once per test database (`make_personas`), not once per test, and read from it once too: each test
    gets instances of its own, made from the rows as read (as a query would make them, without the two queries). What a
    test changes in the cast is rolled back after the test, or flushed and made again (and read again) after a
    transactional one."""

    USERNAMES = {"viewer": "viewer", "developer": "developer", "approver": "approver", "approver2": "approver2",
                 "operator": "operator", "admin": "teamadmin", "helpdesk": "helpdesk", "superuser": "root",
                 "outsider": "outsider"}
    TEAMS = {"team": "Platform", "other_team": "Other"}

    _rows = None  # {attribute: (model, field names, values)}, as read from the database; None: read them again

    def __init__(self):
        from copy import deepcopy

        from django.db import connection

        if Personas._rows is None:
            Personas.read()
        for attribute, (model, names, values) in Personas._rows.items():
            setattr(self, attribute, model.from_db(connection.alias, names, deepcopy(values)))

    @classmethod
    def read(cls):
        """Read the cast's rows: when they are made, and before a test's first use after a restore replaced them (never
        in the middle of a test that may have changed them)."""
        from portal.models import Team, User

        rows = {}
        for model, key, wanted in ((User, "username", cls.USERNAMES),
                                   (Team, "slug", {a: Team.slug_for(name) for a, name in cls.TEAMS.items()})):
            names = [field.attname for field in model._meta.concrete_fields]
            found = {values[names.index(key)]: values
                     for values in model.objects.filter(**{f"{key}__in": wanted.values()}).values_list(*names)}
            rows.update({attribute: (model, names, found[value]) for attribute, value in wanted.items()})
        cls._rows = rows


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
        Personas.read()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker, quick_password_hashing, request):
    """pytest-django's test database, with the personas in it."""
    from django.db.models.signals import post_migrate

    if not session_has_a_test_database(request.session):
        yield
        return
    with django_db_blocker.unblock():
        make_personas()
        Personas.read()
    post_migrate.connect(_personas_again_after_a_flush, dispatch_uid="tests.personas")
    yield
    post_migrate.disconnect(dispatch_uid="tests.personas")


@pytest.hookimpl
def pytest_runtest_teardown(item):
    """A test that restored the database from a backup leaves the cast's rows to be read again."""
    if item.get_closest_marker("replaces_the_database"):
        Personas._rows = None


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
    """client_for(user) -> a test client logged in as user (None: anonymous), with a session of its own.

    A user's first client in a test signs in for real (Django's login: a new session, user_logged_in and what listens
    to it: last_login, the login record, the failed attempts reset). Their next clients in the test get a copy of that
    session as it was just after sign-in, saved under a new key: the session a sign-in makes, in two queries instead of
    a dozen (tests ask for hundreds of clients, often one per request). A user whose password changed in between gets
    a real sign-in again, as the copy's password hash would no longer match."""
    from importlib import import_module

    from django.conf import settings
    from django.test import Client

    sessions = import_module(settings.SESSION_ENGINE)
    signed_in = {}  # (user id, password hash) -> the session's data just after the real sign-in

    def make(user):
        c = Client()
        if user is None:
            return c
        key = (user.pk, user.get_session_auth_hash())
        if key not in signed_in:
            c.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
            signed_in[key] = dict(c.session.items())
            return c
        session = sessions.SessionStore()
        session.update(signed_in[key])
        session.create()
        c.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
        return c

    return make
