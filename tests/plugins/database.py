"""The test database: commits do not wait for the disk, transactional tests end with DELETEs instead of a TRUNCATE
and keep the content types, database connections are short-lived, and stray connections are ended so the test
database can be dropped."""

import pytest
from django.core.management.sql import sql_flush as _django_sql_flush
from django.db import connection


def session_has_a_test_database(session):
    """pytest-django makes the test database only when a collected test uses it; without one, `connection` is the
    configured database itself (a developer's own), which the suite's set-up and clean-up must leave alone."""
    from pytest_django.fixtures import _get_databases_for_setup

    aliases, _serialized = _get_databases_for_setup(session.items)
    return "default" in aliases


@pytest.fixture(scope="session", autouse=True)
def commits_without_waiting_for_the_disk(django_db_setup, django_db_blocker, request):
    """On PostgreSQL the test database commits without waiting for its write-ahead log to reach the disk
    (synchronous_commit off, for every connection to it: the worker's, and those of the portal processes the tests
    start). A commit is as visible to every other connection as before; only a crash of the server could lose the last
    ones, which a test database can afford. On these machines a commit that waits for the disk took some 16 ms against
    2 ms, and the suite's tests, workers and servers commit tens of thousands of times."""
    if session_has_a_test_database(request.session) and connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {connection.ops.quote_name(connection.settings_dict['NAME'])} "
                           "SET synchronous_commit TO off")
            cursor.execute("SET synchronous_commit TO off")


@pytest.fixture(scope="session", autouse=True)
def close_stray_connections_at_the_end(django_db_setup, django_db_blocker, request):
    """Threads of servers and consumers may leave a connection open; end them so the test database can be dropped."""
    yield
    if not session_has_a_test_database(request.session):
        return
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")


# Rows that migrate's post_migrate made and no test changes: the content types and the permissions. A test's flush keeps
# them, so that Django's own post_migrate receivers, which would otherwise make them again app by app (some 150 of the
# 270 queries a flush took), find nothing to do and are not called.
KEPT_BY_A_FLUSH = ("django_content_type", "auth_permission")


def _flush_by_delete(style, connection, reset_sequences=True, allow_cascade=False):
    """What Django's flush runs at the end of every transactional test. The content types and permissions stay
    (KEPT_BY_A_FLUSH): the portal processes the tests share (daphne) cache content type ids, and made again they got
    new ones, so an audit row such a process wrote named a content type that was gone (on SQLite: "FOREIGN KEY
    constraint failed" at the commit, a 500). SQLite deletes each table's rows, as Django's own flush does. On
    PostgreSQL: DELETE FROM each table in one transaction instead of one TRUNCATE of them all. TRUNCATE gives each of
    some sixty tables a new file, which took 1.5-2.5 s per test on a busy machine; the DELETEs of a test's few rows
    take about 0.1 s. Constraints are checked once every row is gone, and the tables' own triggers (the audit trail
    refuses DELETE, the host tallies count it) are off while their rows go, as they were for TRUNCATE. A flush that
    resets sequences is left to Django."""
    if connection.vendor not in ("postgresql", "sqlite") or reset_sequences:
        _post_migrate_after_a_flush.kept = False
        return _django_sql_flush(style, connection, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    tables = [table for table in connection.introspection.django_table_names(only_existing=True, include_views=False)
              if table not in KEPT_BY_A_FLUSH]
    _post_migrate_after_a_flush.kept = True
    if connection.vendor == "sqlite":
        return connection.ops.sql_flush(style, tables, allow_cascade=allow_cascade)
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal")
        triggered = sorted({name.strip('"') for (name,) in cursor.fetchall()}.intersection(tables))
    quote = connection.ops.quote_name
    statements = ["SET CONSTRAINTS ALL DEFERRED",
                  *(f"ALTER TABLE {quote(table)} DISABLE TRIGGER USER" for table in triggered),
                  *(f"DELETE FROM {quote(table)}" for table in tables),
                  "SET CONSTRAINTS ALL IMMEDIATE",  # the checks run now: a table with checks pending cannot be altered
                  *(f"ALTER TABLE {quote(table)} ENABLE TRIGGER USER" for table in triggered)]
    return [";\n".join(statements)]  # one round trip to the server, not some eighty


def _post_migrate_after_a_flush(verbosity, interactive, db, **kwargs):
    """The post_migrate signal a flush sends, without Django's receivers that make content types and permissions when
    the flush kept them (_flush_by_delete). The portal's own receivers (the personas, hosts' tallies) run as ever."""
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes
    from django.core.management.sql import emit_post_migrate_signal
    from django.db.models.signals import post_migrate

    if not _post_migrate_after_a_flush.kept:
        return emit_post_migrate_signal(verbosity, interactive, db, **kwargs)
    post_migrate.disconnect(create_permissions, dispatch_uid="django.contrib.auth.management.create_permissions")
    post_migrate.disconnect(create_contenttypes)
    try:
        return emit_post_migrate_signal(verbosity, interactive, db, **kwargs)
    finally:  # connected again as django.contrib.auth's and contenttypes' AppConfig.ready() connect them
        post_migrate.connect(create_permissions, dispatch_uid="django.contrib.auth.management.create_permissions")
        post_migrate.connect(create_contenttypes)


_post_migrate_after_a_flush.kept = False


@pytest.fixture(scope="session", autouse=True)
def transactional_tests_end_with_deletes():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("django.core.management.commands.flush.sql_flush", _flush_by_delete)
        patch.setattr("django.core.management.commands.flush.emit_post_migrate_signal", _post_migrate_after_a_flush)
        yield


@pytest.fixture(scope="session", autouse=True)
def short_lived_database_connections():
    """Threads (websocket consumers, the test server) must not keep connections that block dropping the test database."""
    connection.settings_dict["CONN_MAX_AGE"] = 0
