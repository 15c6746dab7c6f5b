"""The suite's plugins: the personas, a real Redis of the suite's own, real portal processes (web, worker) on the test
database, the test database's own handling (migrated once per run, into a template the xdist workers' databases are
copied from) and how the suite is spread over xdist's workers (tests/plugins/); and the apps' fixtures that tests of
several apps use (a test names them as parameters, with no import). The fixtures of one folder's tests only are in
that folder's conftest.py. Plain helpers (wait_for, free_port, require_tool, the corpus's path) are in tests/helpers.py.

Nothing here mocks the database or the portal's code. In CI (CI=true) a missing tool fails the test instead of skipping it.
"""

pytest_plugins = [
    "tests.plugins.scheduling",
    "tests.plugins.database",
    "tests.plugins.template_database",
    "tests.plugins.suite_settings",
    "tests.plugins.redis_server",
    "tests.plugins.personas",
    "tests.plugins.processes",
    "tests.api.fixtures",
    "tests.builds.fixtures",
    "tests.diskimages.bootimages",
    "tests.diskimages.fixtures",
    "tests.portal.fixtures",
    "tests.releases.fixtures",
]
