import importlib

from django.db import migrations, models

# A host keeps how bootc verified its booted image (`booted_signature`: the signature of the booted image reference in
# bootc status; `containerPolicy` when it was pulled with --enforce-container-sigpolicy), and the host tally gains
# `enforcing`, computed from it, so the fleet view reads the share of hosts per stage that enforce signatures without
# counting hosts. The triggers of 0006 are made again with the new key and the new watched column.

_0002 = importlib.import_module("hosts.migrations.0002_tally_triggers")
_0006 = importlib.import_module("hosts.migrations.0006_tally_update_available")
DIGEST_KEY = _0002.DIGEST_KEY
DIGEST_CHANGED = _0002.DIGEST_CHANGED
HOST_KEY = "team_id, stage_id, state, drifting, update_available, enforcing"
WATCHED = "team_id, stage_id, state, drifting, update_digest, staged_digest, booted_signature"
HOST_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in WATCHED.split(", "))
ENFORCED = "containerPolicy"


def host_values(prefix, n):
    """The host tally's key read from a host row (OLD or NEW, or a bare row when `prefix` is empty), and `n`."""
    p = f"{prefix}." if prefix else ""
    return (f"{p}team_id, {p}stage_id, {p}state, {p}drifting, ({p}update_digest <> '' AND {p}staged_digest = ''), "
            f"({p}booted_signature = '{ENFORCED}'), {n}")


digest_values = _0006.digest_values

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
           "GROUP BY 1, 2, 3, 4, 5, 6"]


def install(apps, schema_editor):
    statements = POSTGRESQL if schema_editor.connection.vendor == "postgresql" else SQLITE
    for statement in statements + RECOUNT:
        schema_editor.execute(statement)


def back_to_0006(apps, schema_editor):
    """The triggers of 0006 again (the columns of this migration are dropped after this runs)."""
    if schema_editor.connection.vendor == "postgresql":
        for statement in _0006.POSTGRESQL:
            schema_editor.execute(statement)
    else:
        sqlite_drop(apps, schema_editor)


def sqlite_drop(apps, schema_editor):
    """SQLite adds a column by copying the table, and refuses to drop a table that triggers still write to: the
    triggers go first and come back after (install, or the 0006 ones when going back)."""
    if schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE[:3]:
            schema_editor.execute(statement)


def sqlite_back_to_0006(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in _0006.SQLITE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("hosts", "0009_list_search_indexes")]
    operations = [
        migrations.RunPython(sqlite_drop, sqlite_back_to_0006),
        migrations.AddField(model_name="host", name="booted_signature", field=models.CharField(
            blank=True, max_length=100, help_text="How bootc verified the booted image: the signature of its image "
                                                  "reference in bootc status (containerPolicy: enforced)")),
        migrations.AddField(model_name="hosttally", name="enforcing", field=models.BooleanField(
            default=False, help_text="The host booted an image bootc verified under the container policy "
                                     "(`HostQuerySet.enforcing`).")),
        migrations.RunPython(install, back_to_0006),
    ]
