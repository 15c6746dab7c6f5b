"""Migrations: one fresh initial migration per app (nothing had been deployed when they were reset), the hand-written
operations that install database triggers and indexes among them, and nothing in the models that a migration does not
say."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db.migrations import RunPython
from django.db.migrations.loader import MigrationLoader

APPS = ("portal", "builds", "releases", "diskimages", "supplychain", "hosts", "rollouts")
HAND_WRITTEN = {("portal", "0001_initial"), ("hosts", "0001_initial"), ("hosts", "0002_list_search_indexes")}


def test_every_app_starts_from_one_initial_migration_and_only_adds_after_it():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    for app in APPS:
        names = {name for label, name in loader.disk_migrations if label == app}
        assert "0001_initial" in names and not [n for n in names if n.endswith("_initial") and n != "0001_initial"], app
        assert len(loader.graph.leaf_nodes(app)) == 1, f"{app}: its migrations branch"
    assert HAND_WRITTEN <= {key for key, migration in loader.disk_migrations.items()
                            if key[0] in APPS and any(isinstance(op, RunPython) for op in migration.operations)}


@pytest.mark.django_db
def test_the_models_need_no_new_migration():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
