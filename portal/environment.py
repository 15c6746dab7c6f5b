"""How `portal/settings.py` reads the environment: the reader that names a variable it cannot read, the keys a laptop
makes for itself, the database connection, and how each Redis client spells REDIS_URL.

Every function here takes what it needs as arguments (the reader, the var/ directory, DEBUG), so settings.py stays a
list of settings in the order people look for them, and the rules for reading each one sit in one place.
"""

import ipaddress
import json
import secrets
import ssl
import warnings

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

DATABASE_ENGINES = ("django.db.backends.postgresql", "django.db.backends.sqlite3")


class BadSetting(SystemExit):
    """A setting the portal cannot start with: raised while the settings load, and by `portal.startup` when a process
    in production cannot reach its database or bucket. A SystemExit, so whichever entry point loaded the settings
    (manage.py, daphne, a Celery worker or beat) ends with exit status 1 and this one line, and no traceback."""

    def __init__(self, message):
        super().__init__(PREFIX + message)


PREFIX = "Image Mode Portal cannot start: "


class Env(environ.Env):
    """django-environ, stopping start-up with one line that names the variable when a value cannot be read (its own
    errors say "invalid literal for int()" and no more, in a traceback)."""

    def get_value(self, var, *args, **kwargs):
        try:
            return super().get_value(var, *args, **kwargs)
        except (ValueError, TypeError, ImproperlyConfigured) as exc:
            raise BadSetting(f"{var} is not valid: {exc}") from None

    def db_url(self, var="DATABASE_URL", default=environ.Env.NOTSET, engine=None):
        try:
            with warnings.catch_warnings():  # its "Engine not recognized" warning prints the URL, password included
                warnings.simplefilter("ignore")
                config = super().db_url(var, default=default, engine=engine)
        except (ValueError, KeyError, ImproperlyConfigured) as exc:
            raise BadSetting(f"{var} is not a database URL: {exc}") from None
        if config.get("ENGINE") not in DATABASE_ENGINES:
            raise BadSetting(f"{var} must be postgres://USER:PASSWORD@HOST:5432/NAME or sqlite:////PATH/TO/FILE.")
        return config

    db = db_url

    def email_url(self, var="EMAIL_URL", default=environ.Env.NOTSET, backend=None):
        try:
            return super().email_url(var, default=default, backend=backend)
        except (ValueError, KeyError, ImproperlyConfigured) as exc:
            raise BadSetting(f"{var} is not an email URL ({exc}); e.g. smtp+tls://USER:PASSWORD@HOST:587") from None

    email = email_url


# --- Secrets ---------------------------------------------------------------------------------------------------------


def development_secrets(var_dir):
    """Keys for a laptop: made once, kept in var/ so sessions and encrypted rows survive a restart."""
    path = var_dir / "dev-secrets.json"
    keys = json.loads(path.read_text()) if path.exists() else {}
    wanted = {
        "SECRET_KEY": lambda: secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": lambda: Fernet.generate_key().decode(),
        "AUDIT_HMAC_KEY": lambda: secrets.token_urlsafe(32),
    }
    missing = {name: make() for name, make in wanted.items() if name not in keys}
    if missing:  # a file from before a key was added keeps its other keys
        keys.update(missing)
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(keys))
        path.chmod(0o600)
    return keys


def required_secret(env, name, *, debug, var_dir):
    """The secret `name` from the environment; with DEBUG on, the laptop's own when it is unset; else start-up stops."""
    value = env.str(name, default="")
    if value:
        return value
    if debug:
        return development_secrets(var_dir)[name]
    raise BadSetting(f"{name} must be set when DEBUG is off (see .env.example).")


# --- Checks of values ------------------------------------------------------------------------------------------------


def check_networks(name, values):
    """Each of `values` must be an address or a network (CIDR); start-up stops naming the one that is not."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise BadSetting(f"{name}: {value!r} is not an IP address or network (e.g. 10.0.0.0/8).") from None
    return values


# --- Database --------------------------------------------------------------------------------------------------------


def database(env, *, var_dir, pid):
    """DATABASES["default"] from DATABASE_URL (a SQLite file under var/ when it is unset) and the pool's variables."""
    config = env.db("DATABASE_URL", default=f"sqlite:///{var_dir / 'portal.sqlite3'}")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # web, worker and beat share the file: wait for locks instead of failing, and take the write lock up front.
        config.setdefault("OPTIONS", {}).update(
            {"timeout": 30, "transaction_mode": "IMMEDIATE",
             "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
        )
        # A file (not :memory:) so that worker and web processes started by tests share it; one per test session.
        config["TEST"] = {"NAME": str(var_dir / f"test-portal-{pid}.sqlite3")}
    else:
        # Connections come from psycopg's pool, one per process (docs/deploy.md#database-connections): a request
        # borrows one and gives it back when it ends, so a page no longer pays for a new backend, its authentication
        # and cold caches. Persistent connections stay off: under ASGI each request's view runs in a thread of its
        # own, and Django keeps a persistent connection per thread, so with CONN_MAX_AGE > 0 they pile up until
        # PostgreSQL refuses new clients. DATABASE_POOL=false (behind PgBouncer, say) opens a connection per request,
        # or keeps it CONN_MAX_AGE seconds.
        config["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
        config.setdefault("CONN_HEALTH_CHECKS", True)
        if env.bool("DATABASE_POOL", default=True):
            if config["CONN_MAX_AGE"]:
                raise ImproperlyConfigured("CONN_MAX_AGE must be 0 while DATABASE_POOL is on: the pool reuses "
                                           "connections already (set DATABASE_POOL=false to keep connections per "
                                           "thread instead).")
            pool = config.setdefault("OPTIONS", {})["pool"] = {
                "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
                "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=8),
                # A request that finds every connection in use waits this long for one, then fails (PoolTimeout).
                "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
                # Connections idle this long are closed, down to min_size.
                "max_idle": env.float("DATABASE_POOL_MAX_IDLE", default=300.0),
                "name": "portal",
            }
            if not (pool["max_size"] >= 1 and 0 <= pool["min_size"] <= pool["max_size"]):
                raise ImproperlyConfigured(f"DATABASE_POOL_MAX_SIZE ({pool['max_size']}) must be at least 1 and "
                                           f"DATABASE_POOL_MIN_SIZE ({pool['min_size']}) between 0 and it.")
        # PgBouncer in transaction mode cannot keep a cursor open across transactions: DATABASE_SERVER_SIDE_CURSORS=false.
        config["DISABLE_SERVER_SIDE_CURSORS"] = not env.bool("DATABASE_SERVER_SIDE_CURSORS", default=True)
    # django-prometheus's wrappers of the same backends count queries, their time, errors and new connections
    # (django_db_*, on /metrics); the pool and every option above work unchanged through them.
    config["ENGINE"] = config["ENGINE"].replace("django.db.backends.", "django_prometheus.db.backends.")
    return config


# --- Redis: one URL, spelled for each client -------------------------------------------------------------------------
# A password goes in the URL (redis://:PASSWORD@host:6379/0). rediss:// means TLS, with the server's certificate
# verified against REDIS_CA_FILE (default: the system's CAs). Every client reads these: Celery, channels-redis (and with
# it the log stream), the health checks, worker heartbeats and rate limits.


def celery_broker_url(redis_url):
    """Celery spells a unix socket `redis+socket://PATH`; redis-py and channels-redis spell it `unix://PATH`."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


def redis_tls_options(redis_url, ca_file=""):
    """redis-py's keyword arguments for a rediss:// URL (certificate verified); {} for any other URL."""
    if not redis_url.startswith("rediss://"):
        return {}
    return {"ssl_cert_reqs": "required", **({"ssl_ca_certs": ca_file} if ca_file else {})}


def celery_broker_use_ssl(redis_url, ca_file=""):
    """Celery's broker_use_ssl for a rediss:// URL (it refuses one without), else None."""
    if not redis_url.startswith("rediss://"):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, **({"ssl_ca_certs": ca_file} if ca_file else {})}


def channel_layer_hosts(redis_url, ca_file=""):
    return [{"address": redis_url, **redis_tls_options(redis_url, ca_file)}]


# --- Single sign-on (portal/sso.py, docs/sso.md) ----------------------------------------------------------------------

OIDC_ENDPOINTS = ("OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_USER_ENDPOINT",
                  "OIDC_OP_JWKS_ENDPOINT")


def oidc_settings(env):
    """The OpenID Connect settings, all or nothing: {} when OIDC_RP_CLIENT_ID is empty (local accounts only); else every
    endpoint must be an http(s) URL and the client secret set, or start-up stops naming what is missing."""
    client_id = env.str("OIDC_RP_CLIENT_ID", default="")
    if not client_id:
        return {}
    values = {"OIDC_RP_CLIENT_ID": client_id, "OIDC_RP_CLIENT_SECRET": env.str("OIDC_RP_CLIENT_SECRET", default="")}
    for name in OIDC_ENDPOINTS:
        values[name] = env.str(name, default="")
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise BadSetting(f"OIDC_RP_CLIENT_ID is set, so single sign-on needs {', '.join(missing)} too (docs/sso.md).")
    for name in OIDC_ENDPOINTS:
        if not values[name].lower().startswith(("https://", "http://")):
            raise BadSetting(f"{name} must be an https:// URL (from the provider's .well-known/openid-configuration).")
    return values


# portal.models.Role's values (the settings load before the models can; tests/portal/test_sso.py keeps them equal).
ROLE_NAMES = ("viewer", "developer", "approver", "operator", "admin")


def oidc_group_mapping(text):
    """OIDC_GROUP_MAPPING: a JSON object {"group": {"team slug": "role", ...}, ...}; [(group, team slug, role)]."""
    if not text.strip():
        return []
    try:
        mapping = json.loads(text)
    except ValueError as exc:
        raise BadSetting(f"OIDC_GROUP_MAPPING is not JSON ({exc}); e.g. "
                         '{"platform-developers": {"platform": "developer"}}') from None
    if not isinstance(mapping, dict) or not all(isinstance(v, dict) for v in mapping.values()):
        raise BadSetting('OIDC_GROUP_MAPPING must map each group to {"team slug": "role"}, e.g. '
                         '{"platform-developers": {"platform": "developer"}}')
    entries = []
    for group, teams in mapping.items():
        for team, role in teams.items():
            if role not in ROLE_NAMES:
                raise BadSetting(f"OIDC_GROUP_MAPPING gives group {group!r} the role {role!r} in {team!r}; roles are "
                                 f"{', '.join(ROLE_NAMES)}.")
            entries.append((str(group), str(team), str(role)))
    return entries


def settings_in(module):
    """The settings a concern's own module defines (portal/settings_hosts.py, ...): its upper-case names, which is what
    Django reads from a settings module, for portal/settings.py to take in."""
    return {name: value for name, value in vars(module).items() if name.isupper()}
