"""A real OpenID Connect provider for the single sign-on tests: a small Django project with django-oauth-toolkit's
OIDC support, run as its own process on loopback by `tests/portal/sso_fixtures.py` (test support, not a portal app).

Its users and their groups come from a JSON file the test writes ({"alice": {"password", "email", "groups"}}); the
groups are read again at every sign-in, so a test changes someone's groups by rewriting the file."""
