"""What a portal process checks as it starts, so that a bad setting stops it with one line naming the setting.

`BadSetting` (portal/environment.py) is raised while the settings load (a missing key, a malformed URL, a number that
is not one) and here, when a process in production cannot reach its database or its bucket. It is a SystemExit, so
whichever entry point loaded the settings (manage.py, daphne, a Celery worker or beat) ends with exit status 1 and the
one line, and no traceback.
"""

import contextlib

import psycopg
from django.conf import settings
from django.db import OperationalError, connection
from psycopg_pool import PoolTimeout

from portal import objectstore
from portal.environment import BadSetting


def database_unreachable(exc):
    """The BadSetting for a database that did not accept a connection: where it was tried, and why (no password)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        where = str(db["NAME"])
    else:
        where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}, database {db.get('NAME')}"
    if _is_pool_timeout(exc):
        # The pool only says it waited in vain; one connection of our own says why.
        exc = _direct_connection_error() or exc
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return BadSetting(f"DATABASE_URL: cannot connect to {where}: {reason}")


def _pooled():
    return connection.vendor == "postgresql" and bool(connection.settings_dict["OPTIONS"].get("pool"))


def _is_pool_timeout(exc):
    return isinstance(exc, PoolTimeout) or isinstance(exc.__cause__, PoolTimeout)


def _direct_connection_error():
    """The error of one connection opened outside the pool (None if it opens): the pool retries in the background and
    would only say, after DATABASE_POOL_TIMEOUT, that no connection came."""
    try:
        psycopg.connect(**connection.get_connection_params()).close()
    except psycopg.Error as exc:
        return exc
    return None


def require_database():
    """In production (DEBUG off) a web, worker or beat process that cannot reach its database stops at once."""
    if settings.DEBUG:
        return
    if _pooled():
        error = _direct_connection_error()
        if error is not None:
            raise database_unreachable(error) from None
        return
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        raise database_unreachable(exc) from None
    finally:
        connection.close()


def require_storage():
    """In production with OBJECT_STORAGE=s3, a web, worker or beat process whose bucket cannot be reached (wrong
    credentials, no such bucket, endpoint down) stops at once, naming the setting, rather than failing a first upload
    hours later."""
    if settings.DEBUG or settings.OBJECT_STORAGE != "s3":
        return
    try:
        objectstore.bucket_reachable()
    except objectstore.StorageUnavailable as exc:
        raise BadSetting(str(exc)) from None


@contextlib.contextmanager
def database_errors_in_one_line():
    """A management command whose database never answered stops with one line; any other error is left alone."""
    try:
        yield
    except OperationalError as exc:
        if connection.connection is not None:
            raise
        raise database_unreachable(exc) from None
