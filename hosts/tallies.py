"""The maintained host counts: how many hosts are in each (team, stage, state, drifting) and boot each digest, kept by
database triggers so that the host list, the fleet view and the dashboard never count the hosts table, and the reads
over them. The models are registered through `hosts.models`, which imports them; `hosts.services.tallies_compact`
folds their rows."""

from django.db import connection, models
from django.db.models import Q, Sum


class HostTally(models.Model):
    """How many hosts are in each (team, stage, state, drifting, update available): the counts of the host list, the
    fleet view and the dashboard, so that no page counts 100,000 rows.

    Kept by database triggers on `hosts_host` (migrations 0002, 0006 and 0010): every insert, delete, and change of the
    columns the key is made of adds a row of +1 and/or -1, whatever wrote it (a service, a bulk update, a cascade).
    Rows are only ever added, so concurrent writers never wait for each other on a counter; `tallies_compact` (beat,
    every minute) folds them into one row per key. A count is the sum of `n` over its key. No foreign keys: a team's
    hosts are deleted before the team, and their -1 rows must outlive it until the next compaction."""

    team_id = models.BigIntegerField(db_index=True)
    stage_id = models.BigIntegerField(null=True)
    state = models.CharField(max_length=20)
    drifting = models.BooleanField()
    update_available = models.BooleanField(default=False, help_text="An update found by `bootc upgrade --check` and "
                                                                    "not staged yet (`HostQuerySet.update_available`).")
    enforcing = models.BooleanField(default=False, help_text="The host booted an image bootc verified under the "
                                                             "container policy (`HostQuerySet.enforcing`).")
    n = models.IntegerField()

    def __str__(self):
        return (f"team {self.team_id} stage {self.stage_id} {self.state}{' drifting' if self.drifting else ''}"
                f"{' update available' if self.update_available else ''}{' enforcing' if self.enforcing else ''}: "
                f"{self.n:+d}")


class DigestTally(models.Model):
    """How many hosts of a team boot each (image, digest, version, architecture): the fleet view's groups. Kept like
    `HostTally`, for hosts that report a booted digest."""

    team_id = models.BigIntegerField(db_index=True)
    booted_image = models.CharField(max_length=512)
    booted_digest = models.CharField(max_length=80)
    booted_version = models.CharField(max_length=200)
    architecture = models.CharField(max_length=32)
    n = models.IntegerField()

    def __str__(self):
        return f"team {self.team_id} {self.booted_digest}: {self.n:+d}"


def running_digests() -> dict[tuple[int, str], int]:
    """{(team id, digest): how many of the team's hosts boot it}, from the maintained tally (the supply chain asks, to
    tell operators of new advisories for what their hosts boot)."""
    rows = (DigestTally.objects.exclude(booted_digest="").values("team_id", "booted_digest")
            .annotate(hosts=Sum("n")).filter(hosts__gt=0))
    return {(row["team_id"], row["booted_digest"]): row["hosts"] for row in rows}


def tally_counts(team_ids, *, stage_ids=None, state=None, update_available=None, enforcing=None):
    """{(team_id, stage_id, state, drifting): hosts} over the given teams, from the maintained tally; with
    `update_available=True`, only hosts with an update found and not staged; with `enforcing` True or False, only
    hosts whose booted image bootc verified under the container policy, or only those whose was not."""
    rows = HostTally.objects.filter(team_id__in=list(team_ids))
    if update_available is not None:
        rows = rows.filter(update_available=update_available)
    if enforcing is not None:
        rows = rows.filter(enforcing=enforcing)
    if stage_ids is not None:
        rows = rows.filter(stage_id__in=[s for s in stage_ids if s is not None]) if None not in stage_ids else \
            rows.filter(Q(stage_id__in=[s for s in stage_ids if s is not None]) | Q(stage_id__isnull=True))
    if state:
        rows = rows.filter(state=state)
    rows = rows.values("team_id", "stage_id", "state", "drifting").annotate(total=Sum("n")).order_by()
    return {(r["team_id"], r["stage_id"], r["state"], r["drifting"]): r["total"] for r in rows if r["total"]}


def digest_tally_images(team_ids):
    """{(team_id, booted_image): hosts} over the given teams: the fleet view's repositories come from these few rows
    (one per image reference), not from every digest."""
    rows = (DigestTally.objects.filter(team_id__in=list(team_ids)).values("team_id", "booted_image")
            .annotate(total=Sum("n")).filter(total__gt=0).order_by())
    return {(r["team_id"], r["booted_image"]): r["total"] for r in rows}


def digest_tally_top(groups, *, limit):
    """The `limit` most-run digests of each group of image references, and each group's totals, ranked by the
    database: with every host on its own digest a repository has thousands, and a page shows ten.

    `groups`: {group: [(team_id, booted_image), ...]}. Returns {group: (digests, hosts, [(digest, n), ...])}: how many
    digests and hosts the group has in all, and its top `limit` digests by hosts (then digest). A digest counts when its
    sum is positive: every key's sum is a number of hosts, never below 0, so this is the sum of its positive keys."""
    shown = [(team_id, image, index) for index, key in enumerate(groups) for team_id, image in groups[key]]
    if not shown:
        return {}
    keys = list(groups)
    values = ", ".join(["(%s, %s, %s)"] * len(shown))
    postgresql = connection.vendor == "postgresql"
    per_digest = f"""
        WITH shown(team_id, booted_image, grp) AS (VALUES {values}),
        per_digest AS {"MATERIALIZED" if postgresql else ""} (
            SELECT shown.grp, t.booted_digest, SUM(t.n) AS n
            FROM hosts_digesttally t JOIN shown ON t.team_id = shown.team_id AND t.booted_image = shown.booted_image
            GROUP BY shown.grp, t.booted_digest HAVING SUM(t.n) > 0
        )"""  # nosec B608 - placeholders only
    if postgresql:
        # A bounded top-N per repository (no sort of every digest) and the totals apart. Ties go by digest in
        # code-point order (C collation: no locale rules to apply, and the order Python sorts in).
        rest = """,
        totals AS (SELECT grp, COUNT(*) AS digests, SUM(n) AS hosts FROM per_digest GROUP BY grp)
        SELECT totals.grp, top.booted_digest, top.n, totals.digests, totals.hosts FROM totals CROSS JOIN LATERAL (
            SELECT booted_digest, n FROM per_digest WHERE per_digest.grp = totals.grp
            ORDER BY n DESC, booted_digest COLLATE "C" LIMIT %s
        ) top ORDER BY totals.grp, top.n DESC, top.booted_digest COLLATE "C"
        """
    else:  # SQLite: no LATERAL; a window over the digests
        rest = """,
        ranked AS (
            SELECT grp, booted_digest, n, ROW_NUMBER() OVER (PARTITION BY grp ORDER BY n DESC, booted_digest) AS rank,
                   COUNT(*) OVER (PARTITION BY grp) AS digests, SUM(n) OVER (PARTITION BY grp) AS hosts
            FROM per_digest
        )
        SELECT grp, booted_digest, n, digests, hosts FROM ranked WHERE rank <= %s ORDER BY grp, rank"""
    sql = per_digest + rest  # nosec B608 - placeholders only
    params = [value for row in shown for value in row] + [limit]
    out = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for grp, digest, n, digests, hosts in cursor.fetchall():
            entry = out.setdefault(keys[grp], (int(digests), int(hosts), []))
            entry[2].append((digest, int(n)))
    return out
