"""Indexes for the host list's search and label filter and the fleet view's version read, so that they stay fast at
100,000 hosts (bench/README.md, "pages at 100,000 hosts").

- The search (`HostQuerySet.search`) matches `UPPER(name) LIKE UPPER('%text%')` and the same on the address, and the
  labels by `=`/`LIKE`: trigram GIN indexes (pg_trgm) on exactly those expressions let PostgreSQL answer it from a
  bitmap of matches instead of reading every host (6 ms against 240 ms for 100,000 hosts). pg_trgm is a trusted
  extension, which the database's owner may create; where it cannot be created the indexes are left out (the search
  still works, by a scan) and the migration says so.
- The fleet view keys its cached sums by the highest id, the row count and the sum of the team's digest tally rows:
  an index on (team_id, id) that includes n gives them from the index alone.

Made here rather than in the models' Meta: the expressions and the INCLUDE are PostgreSQL's; SQLite (`make run`)
gets the plain (team_id, id) index. A migration of its own after 0001_initial, not part of it: an administrator who
creates pg_trgm later runs this one again alone (`migrate hosts 0001_initial`, then `migrate hosts`), which going back
to 0001_initial could not do."""

from django.db import migrations, transaction

TRIGRAM = [
    "CREATE INDEX IF NOT EXISTS hosts_host_name_trgm ON hosts_host USING gin (UPPER(name::text) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS hosts_host_address_trgm ON hosts_host USING gin (UPPER(address::text) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS hosts_host_labels_trgm ON hosts_host USING gin (labels gin_trgm_ops)",
]
DIGEST_TALLY_POSTGRESQL = ("CREATE INDEX IF NOT EXISTS hosts_digesttally_team_version ON hosts_digesttally "
                           "(team_id, id) INCLUDE (n)")
DIGEST_TALLY_SQLITE = "CREATE INDEX IF NOT EXISTS hosts_digesttally_team_version ON hosts_digesttally (team_id, id)"


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.execute(DIGEST_TALLY_SQLITE)
        return
    schema_editor.execute(DIGEST_TALLY_POSTGRESQL)
    try:
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except Exception as exc:  # noqa: BLE001 - any refusal (no privilege, contrib not installed) leaves the search as it was
        print(f"\n  hosts: the host search's trigram indexes were not made (pg_trgm: {exc}); the search still works, "
              "by a scan of the hosts table. An administrator can run CREATE EXTENSION pg_trgm and migrate "
              "hosts 0001_initial, then hosts again.")
        return
    for statement in TRIGRAM:
        schema_editor.execute(statement)


def remove(apps, schema_editor):
    for name in ("hosts_host_name_trgm", "hosts_host_address_trgm", "hosts_host_labels_trgm",
                 "hosts_digesttally_team_version"):
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("hosts", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
