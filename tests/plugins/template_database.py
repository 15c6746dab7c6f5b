"""The test database is migrated once per run, not once per xdist worker: on PostgreSQL the controller migrates a
template database while the workers start, and each worker's test database is `CREATE DATABASE ... TEMPLATE` of it.

Each migration of the portal takes some 6 s of CPU (and the server's). The controller is idle while its workers import
the portal and collect the tests (some 10 s of CPU each), so it migrates the template then, in a thread, and a worker
waits for it only if it is not made by the time the worker's first test needs the database. The worker's own set-up is
pytest-django's and Django's as ever (`setup_databases`, the personas' fixture after it); the template is Django's own
`TEST["TEMPLATE"]` setting, and its `migrate` then finds every migration applied.

The template is named after a hash of every installed app's migration files, made afresh each run and dropped when the
run ends (a template left by a killed run is never taken for this run's: it is dropped and made again). Nothing changes
without xdist (`-n 0`), on SQLite, with --reuse-db (the workers' databases are kept and migrated in place) or with
--nomigrations.
"""

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from pytest_django.plugin import blocking_manager_key

from tests.plugins.database import session_has_a_test_database

WORKERINPUT_KEY = "template_database"


def migrations_hash():
    """A hash of the migration files of every installed app (Django's and the libraries' too), in the loader's order."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    digest = hashlib.sha256()
    for key in sorted(loader.disk_migrations):
        path = Path(sys.modules[type(loader.disk_migrations[key]).__module__].__file__)
        digest.update("/".join(key).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


class TemplateDatabase:
    """The template the controller makes in a thread. Its lock file is held until the template is made (or failed);
    then its result file says which: {"name": ...} or {"error": ...}."""

    def __init__(self, config):
        self.config = config
        self.directory = Path(tempfile.mkdtemp(prefix="portal-template-database-"))
        self.lock_path = self.directory / "lock"
        self.result_path = self.directory / "result.json"
        self.name = None
        self._lock = open(self.lock_path, "wb")  # held until the thread is done
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # before any worker starts, so that every worker waits for it
        self._thread = threading.Thread(target=self._make, name="template-database", daemon=True)
        self._thread.start()

    def for_workers(self):
        return {"lock": str(self.lock_path), "result": str(self.result_path)}

    def _make(self):
        try:
            connection = connections[DEFAULT_DB_ALIAS]
            self.name = f"{connection.creation._get_test_db_name()}_template_{migrations_hash()}"
            with self.config.stash[blocking_manager_key].unblock():
                migrate_into(connection, self.name, verbosity=self.config.option.verbose)
            result = {"name": self.name}
        except BaseException:  # every worker that needs the database says why it is not there
            result = {"error": traceback.format_exc()}
        try:
            partial = self.result_path.with_suffix(".partial")
            partial.write_text(json.dumps(result))
            partial.rename(self.result_path)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def drop(self):
        """Once every worker is done (their own databases are dropped): wait for the thread, if the run ended before
        it did, then drop the template."""
        self._thread.join()
        try:
            if self.name:
                connection = connections[DEFAULT_DB_ALIAS]
                with self.config.stash[blocking_manager_key].unblock(), connection._nodb_cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS {connection.ops.quote_name(self.name)} WITH (FORCE)")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def migrate_into(connection, name, *, verbosity):
    """Django's create_test_db under the template's name: the database dropped if a killed run left it, made, migrated
    (post_migrate's content types, permissions and host tallies with it). Then nothing may stay connected to it, or
    PostgreSQL refuses to copy it."""
    settings_dict = connection.settings_dict
    original = settings_dict["NAME"], settings_dict["TEST"].get("NAME")
    settings_dict["TEST"]["NAME"] = name
    try:
        connection.creation.create_test_db(verbosity=verbosity, autoclobber=True, serialize=False)
    finally:
        connection.close()
        connection.close_pool()
        settings_dict["NAME"], settings_dict["TEST"]["NAME"] = original


def template_database_applies(config):
    """On the xdist controller (workers to come), on PostgreSQL, with the test databases made afresh and migrated."""
    return (config.pluginmanager.has_plugin("dsession") and connections[DEFAULT_DB_ALIAS].vendor == "postgresql"
            and not config.getvalue("reuse_db") and not config.getvalue("nomigrations"))


template_key = pytest.StashKey[TemplateDatabase]()


def pytest_sessionstart(session):
    """Before xdist starts the workers (its own pytest_sessionstart runs last)."""
    if template_database_applies(session.config):
        session.config.stash[template_key] = TemplateDatabase(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist's hook on the controller, for each worker it starts: where the worker finds the template."""
    template = node.config.stash.get(template_key, None)
    if template is not None:
        node.workerinput[WORKERINPUT_KEY] = template.for_workers()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    template = session.config.stash.get(template_key, None)
    if template is not None:
        template.drop()


def wait_for_the_template(paths):
    """The template's name, once the controller has made it; its error when it could not."""
    with open(paths["lock"], "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # the controller holds it until the template is made or failed
    try:
        result = json.loads(Path(paths["result"]).read_text())
    except FileNotFoundError:
        raise RuntimeError("The xdist controller stopped before it made the template test database.") from None
    if "error" in result:
        raise RuntimeError(f"The xdist controller could not make the template test database:\n{result['error']}")
    return result["name"]


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, request):
    """pytest-django's hook "just before the databases are configured": a worker's test database is made from the
    controller's template (its name keeps pytest-django's _gw<n> suffix)."""
    paths = getattr(request.config, "workerinput", {}).get(WORKERINPUT_KEY)
    if paths and session_has_a_test_database(request.session):
        settings.DATABASES[DEFAULT_DB_ALIAS].setdefault("TEST", {})["TEMPLATE"] = wait_for_the_template(paths)

