import importlib

from django.db import migrations, models

# The host tally gains `update_available`: `bootc upgrade --check` found an update (the booted entry's cachedUpdate,
# Host.update_digest) and nothing is staged yet. The triggers of 0002 are made again with the new key; the column is
# computed from the row, so every write that changes update_digest or staged_digest moves a host between keys.

_0002 = importlib.import_module("hosts.migrations.0002_tally_triggers")
DIGEST_KEY = _0002.DIGEST_KEY
HOST_KEY = "team_id, stage_id, state, drifting, update_available"
WATCHED = "team_id, stage_id, state, drifting, update_digest, staged_digest"
HOST_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in WATCHED.split(", "))
DIGEST_CHANGED = _0002.DIGEST_CHANGED


def host_values(prefix, n):
    """The host tally's key read from a host row (OLD or NEW, or a bare row when `prefix` is empty), and `n`."""
    p = f"{prefix}." if prefix else ""
    return (f"{p}team_id, {p}stage_id, {p}state, {p}drifting, ({p}update_digest <> '' AND {p}staged_digest = ''), "
            f"{n}")


def digest_values(prefix, n):
    return ", ".join(f"{prefix}.{c}" for c in DIGEST_KEY.split(", ")) + f", {n}"


POSTGRESQL = [f"""
CREATE OR REPLACE FUNCTION hosts_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO hosts_hosttally ({HOST_KEY}, n) VALUES ({host_values("OLD", -1)});
    IF OLD.booted_digest <> '' THEN
      INSERT INTO hosts_digesttally ({DIGEST_KEY}, n) VALUES ({digest_values("OLD", -1)});
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO hosts_hosttally ({HOST_KEY}, n) VALUES ({host_values("NEW", 1)});
    IF NEW.booted_digest <> '' THEN
      INSERT INTO hosts_digesttally ({DIGEST_KEY}, n) VALUES ({digest_values("NEW", 1)});
    END IF;
  END IF;
  RETURN NULL;
END $$""",  # nosec B608 - statements built from the fixed column lists above
    "DROP TRIGGER hosts_tally_update ON hosts_host",
    f"CREATE TRIGGER hosts_tally_update AFTER UPDATE ON hosts_host FOR EACH ROW "
    f"WHEN ({HOST_CHANGED} OR {DIGEST_CHANGED}) EXECUTE FUNCTION hosts_tally()",
]


def _sqlite_rows(prefix, n):
    return (f"INSERT INTO hosts_hosttally ({HOST_KEY}, n) VALUES ({host_values(prefix, n)}); "  # nosec B608
            f"INSERT INTO hosts_digesttally ({DIGEST_KEY}, n) SELECT {digest_values(prefix, n)} "
            f"WHERE {prefix}.booted_digest <> ''; ")


SQLITE = [
    "DROP TRIGGER IF EXISTS hosts_tally_insert", "DROP TRIGGER IF EXISTS hosts_tally_delete",
    "DROP TRIGGER IF EXISTS hosts_tally_update",
    f"CREATE TRIGGER hosts_tally_insert AFTER INSERT ON hosts_host BEGIN {_sqlite_rows('NEW', 1)}END",
    f"CREATE TRIGGER hosts_tally_delete AFTER DELETE ON hosts_host BEGIN {_sqlite_rows('OLD', -1)}END",
    f"CREATE TRIGGER hosts_tally_update AFTER UPDATE ON hosts_host "
    f"WHEN {(HOST_CHANGED + ' OR ' + DIGEST_CHANGED).replace('IS DISTINCT FROM', 'IS NOT')} "
    f"BEGIN {_sqlite_rows('OLD', -1)}{_sqlite_rows('NEW', 1)}END",
]
RECOUNT = ["DELETE FROM hosts_hosttally",
           f"INSERT INTO hosts_hosttally ({HOST_KEY}, n) SELECT {host_values('', 'COUNT(*)')} FROM hosts_host "  # nosec B608
           "GROUP BY 1, 2, 3, 4, 5"]


def install(apps, schema_editor):
    statements = POSTGRESQL if schema_editor.connection.vendor == "postgresql" else SQLITE
    for statement in statements + RECOUNT:
        schema_editor.execute(statement)


def remove(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for statement in _0002.POSTGRESQL_REVERSE[:1] + [_0002.POSTGRESQL[0].replace("CREATE FUNCTION",
                                                                                     "CREATE OR REPLACE FUNCTION"),
                                                         _0002.POSTGRESQL[2]]:
            schema_editor.execute(statement)
    else:
        sqlite_drop(apps, schema_editor)


def sqlite_drop(apps, schema_editor):
    """SQLite adds a column by copying the table, and refuses to drop a table that triggers still write to: the
    triggers go first and come back after (install, or the 0002 ones when going back)."""
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE[:3]:
            schema_editor.execute(statement)


def sqlite_back_to_0002(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _0002.SQLITE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("hosts", "0005_rollback_digest_index")]
    operations = [
        migrations.RunPython(sqlite_drop, sqlite_back_to_0002),
        migrations.AddField(model_name="hosttally", name="update_available", field=models.BooleanField(
            default=False, help_text="An update found by `bootc upgrade --check` and not staged yet "
                                     "(`HostQuerySet.update_available`).")),
        migrations.RunPython(install, remove),
    ]
