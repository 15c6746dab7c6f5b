"""How the suite is ordered and spread over xdist's workers."""

import pytest

# Fixtures that start real processes (portal processes, podman, sshd, skopeo against the registry): a test that uses one
# is marked `processes` without saying so itself. Tests that start processes of their own carry the marker.
PROCESS_FIXTURES = {"start_worker", "portal_server", "podman_store", "sshd", "seed_images", "bib_standin", "bootable_base",
                    "moto_server", "moto_server_checking_keys"}


def _weight(item):
    """2 for a slow test, 1 for one that starts processes (or a browser), 0 for the rest."""
    if item.get_closest_marker("slow"):
        return 2
    return 1 if item.get_closest_marker("processes") else 0


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under `-n N --dist worksteal` (pyproject.toml), worker k starts with the k-th contiguous share of this order, and
    a worker that runs out steals from the end of the busiest one's queue. So the slow tests and those that start
    processes are dealt out to the workers in turn, each share starting with its heavy ones: the workers get the same
    amount of heavy work, and what is left to steal at the end is quick tests, never a two-minute one that keeps the
    other worker waiting (with `--dist load` one worker once idled for eight minutes)."""
    for item in items:
        if item.get_closest_marker("browser") or PROCESS_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.processes)
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    if workers < 2:
        items[:] = _database_replacers_first(items)
        return
    heavy = sorted((item for item in items if _weight(item)), key=_weight, reverse=True)
    light = [item for item in items if not _weight(item)]
    shares = []
    for k in range(workers):  # the sizes worksteal's first distribution gives: len // remaining workers, in turn
        left = len(items) - sum(len(share) for share in shares)
        shares.append([None] * (left // (workers - k)))
    ordered = []
    for k, share in enumerate(shares):
        mine = heavy[k::workers]
        take = max(0, len(share) - len(mine))
        ordered += mine + light[:take]
        light = light[take:]
    items[:] = _database_replacers_first(ordered + light)


def _database_replacers_first(items):
    """Tests that drop the test database and restore it from a backup run before anything else in their worker. The
    drop ends every connection to the database, and a connection that an earlier test left with a thread of the worker
    then fails a later test ("terminating connection due to administrator command"); at the start nothing has been left
    yet. They open the first share, so the first worker runs them first (worksteal never steals the head of a queue)."""
    first = [item for item in items if item.get_closest_marker("replaces_the_database")]
    return first + [item for item in items if item not in first]
