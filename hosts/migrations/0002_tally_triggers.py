from django.db import migrations

# The tallies are kept by triggers (see hosts.models.HostTally): every insert and delete of a host, and every change of
# the counted columns, appends +1/-1 rows. PostgreSQL and SQLite spell triggers differently; both are here.

HOST_KEY = "team_id, stage_id, state, drifting"
DIGEST_KEY = "team_id, booted_image, booted_digest, booted_version, architecture"
HOST_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in HOST_KEY.split(", "))
DIGEST_CHANGED = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in DIGEST_KEY.split(", "))


def _values(prefix, key, n):
    return ", ".join(f"{prefix}.{c}" for c in key.split(", ")) + f", {n}"


POSTGRESQL = [f"""
CREATE FUNCTION hosts_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO hosts_hosttally ({HOST_KEY}, n) VALUES ({_values("OLD", HOST_KEY, -1)});
    IF OLD.booted_digest <> '' THEN
      INSERT INTO hosts_digesttally ({DIGEST_KEY}, n) VALUES ({_values("OLD", DIGEST_KEY, -1)});
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO hosts_hosttally ({HOST_KEY}, n) VALUES ({_values("NEW", HOST_KEY, 1)});
    IF NEW.booted_digest <> '' THEN
      INSERT INTO hosts_digesttally ({DIGEST_KEY}, n) VALUES ({_values("NEW", DIGEST_KEY, 1)});
    END IF;
  END IF;
  RETURN NULL;
END $$""",  # nosec B608 - statements built from the fixed column lists above
    "CREATE TRIGGER hosts_tally_insert_delete AFTER INSERT OR DELETE ON hosts_host FOR EACH ROW "
    "EXECUTE FUNCTION hosts_tally()",
    f"CREATE TRIGGER hosts_tally_update AFTER UPDATE ON hosts_host FOR EACH ROW "
    f"WHEN ({HOST_CHANGED} OR {DIGEST_CHANGED}) EXECUTE FUNCTION hosts_tally()",
]
POSTGRESQL_REVERSE = ["DROP TRIGGER hosts_tally_update ON hosts_host",
                      "DROP TRIGGER hosts_tally_insert_delete ON hosts_host", "DROP FUNCTION hosts_tally()"]


def _sqlite_rows(prefix, n):
    return (f"INSERT INTO hosts_hosttally ({HOST_KEY}, n) VALUES ({_values(prefix, HOST_KEY, n)}); "  # nosec B608
            f"INSERT INTO hosts_digesttally ({DIGEST_KEY}, n) SELECT {_values(prefix, DIGEST_KEY, n)} "
            f"WHERE {prefix}.booted_digest <> ''; ")


SQLITE = [
    f"CREATE TRIGGER hosts_tally_insert AFTER INSERT ON hosts_host BEGIN {_sqlite_rows('NEW', 1)}END",
    f"CREATE TRIGGER hosts_tally_delete AFTER DELETE ON hosts_host BEGIN {_sqlite_rows('OLD', -1)}END",
    f"CREATE TRIGGER hosts_tally_update AFTER UPDATE ON hosts_host "
    f"WHEN {(HOST_CHANGED + ' OR ' + DIGEST_CHANGED).replace('IS DISTINCT FROM', 'IS NOT')} "
    f"BEGIN {_sqlite_rows('OLD', -1)}{_sqlite_rows('NEW', 1)}END",
]
SQLITE_REVERSE = ["DROP TRIGGER hosts_tally_insert", "DROP TRIGGER hosts_tally_delete", "DROP TRIGGER hosts_tally_update"]


def install(apps, schema_editor):
    statements = POSTGRESQL if schema_editor.connection.vendor == "postgresql" else SQLITE
    for statement in statements:
        schema_editor.execute(statement)


def remove(apps, schema_editor):
    statements = POSTGRESQL_REVERSE if schema_editor.connection.vendor == "postgresql" else SQLITE_REVERSE
    for statement in statements:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("hosts", "0001_initial")]
    operations = [migrations.RunPython(install, remove)]
