"""The fleet view's numbers: hosts per team and stage, and the digests each repository's hosts boot, from the maintained
tallies (`HostTally`, `DigestTally`), never from the hosts themselves.

Summing the tallies of 10,000 digests costs about 20 ms of PostgreSQL per page, and the fleet view is the page an
operator keeps open. The sums change only when a tally row is written, so on PostgreSQL they are kept in the cache under
a version of the teams' tally rows (their highest id, how many there are and their sum), read before the sums:

- rows are only added, with ids from a sequence that never goes back (not even when a transaction rolls back), or
  folded by `tallies_compact`, which deletes rows and adds their sum as a new row;
- so when the highest id and the number of rows are what they were, no row was added since (it would have a higher id)
  and none was deleted (the count would be lower), and the sums are the same.

A version is read before the sums it keys, so a cached answer is never older than its key. SQLite computes every time:
its sequence and rows roll back with a transaction, so a version could come again with other rows behind it (the
demo's fleet is small anyway). An answer is also summed again once it is `CACHE_SECONDS` old, a bound on what could
still slip through (a row committed late with an id below the highest, while as many others were folded away); a
worker does that (`hosts.tasks.fleet_tallies_refresh`) while readers keep getting the answer they had, because with
every host on a digest of its own the sums of 100,000 hosts take about 300 ms, which no reader should wait for only
because a minute passed. A changed version is summed in the request: it is news the operator is waiting for. An
answer left unrefreshed (no worker, broker down) is dropped after `KEEP_SECONDS`, and summed in the request then.
"""

import logging
import time
from dataclasses import dataclass, field

from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, Sum, Window
from django.db.models.functions import RowNumber

from . import actions
from .models import PROBLEM_STATES, HostRuntime, HostState, RuntimeChange
from .tallies import DigestTally, HostTally, digest_tally_images, digest_tally_top, tally_counts

GROUPS_PER_PAGE = 20
# A repository whose hosts boot many digests (every host on its own build, say) lists the most-run ones and sums up the
# rest, so the page stays a page at any fleet size.
DIGESTS_PER_REPOSITORY = 10
CACHE_SECONDS = 60  # how old an answer gets before a worker sums it again
KEEP_SECONDS = 600  # how long an answer is served at all when no worker sums it again
log = logging.getLogger(__name__)
NOT_REPORTED = "(image not reported)"


@dataclass
class Tallies:
    """What the fleet view shows of a set of teams, before names and links are added: plain values, so it caches."""

    counts: dict = field(default_factory=dict)  # {(team_id, stage_id, state, drifting): hosts}
    available: dict = field(default_factory=dict)  # the same, of the hosts with an update available (not staged)
    enforcing: dict = field(default_factory=dict)  # the same, of the hosts whose booted image bootc verified
    groups: list = field(default_factory=list)  # [((team_id, repository), [(team_id, image), ...]), ...] sorted
    page_number: int = 1
    top: dict = field(default_factory=dict)  # {(team_id, repository): (digests, hosts, [(digest, n), ...])}
    details: dict = field(default_factory=dict)  # {((team_id, repository), digest): {version, architecture, tags}}


def tallies(team_ids, page_number):
    """The fleet's tallies for these teams (in the order their repositories are listed: by team name) and this page of
    repositories, from the cache when no tally row of theirs changed."""
    team_ids = list(team_ids)
    if connection.vendor != "postgresql":
        return _sum_tallies(team_ids, page_number)
    key = _key(team_ids, page_number)
    entry = cache.get(key)
    if entry is None:
        return _sum_and_keep(key, team_ids, page_number)
    summed_at, found = entry
    if time.time() - summed_at >= CACHE_SECONDS and cache.add(f"{key}:refreshing", 1, CACHE_SECONDS):
        transaction.on_commit(lambda: _queue_refresh(team_ids, page_number))
    return found


def refresh(team_ids, page_number):
    """Sum the tallies again for the fleet view's cache (a worker's part of `tallies`)."""
    team_ids = list(team_ids)
    key = _key(team_ids, page_number)
    _sum_and_keep(key, team_ids, page_number)
    cache.delete(f"{key}:refreshing")


def _key(team_ids, page_number):
    return f"hosts.fleet:{','.join(map(str, team_ids))}:{page_number}:{_version(team_ids)}"


def _sum_and_keep(key, team_ids, page_number):
    found = _sum_tallies(team_ids, page_number)
    cache.set(key, (time.time(), found), KEEP_SECONDS)
    return found


def _queue_refresh(team_ids, page_number):
    """Best effort: when no worker takes it, the answer is served until KEEP_SECONDS and then summed in a request."""
    from .tasks import fleet_tallies_refresh  # a cycle: hosts.tasks imports the modules whose work it runs

    try:
        fleet_tallies_refresh.delay(team_ids, page_number)
    except Exception as exc:  # noqa: BLE001 - kombu and redis-py raise several types when the broker is down
        log.warning("could not queue a refresh of the fleet view's sums: %s", exc)


def _version(team_ids):
    parts = []
    for model in (HostTally, DigestTally):
        row = model.objects.filter(team_id__in=team_ids).aggregate(last=Max("id"), rows=Count("id"), n=Sum("n"))
        parts.append(f"{row['last']}.{row['rows']}.{row['n']}")
    return "-".join(parts)


def _sum_tallies(team_ids, page_number):
    groups = {}
    for team_id, image in digest_tally_images(team_ids):
        repository = actions.repository_of(image) if image else NOT_REPORTED
        groups.setdefault((team_id, repository), []).append((team_id, image))
    rank = {team_id: position for position, team_id in enumerate(team_ids)}
    groups = sorted(groups.items(), key=lambda item: (rank[item[0][0]], item[0][1]))
    page = Paginator(groups, GROUPS_PER_PAGE).get_page(page_number)
    shown = dict(page.object_list)
    top = digest_tally_top(shown, limit=DIGESTS_PER_REPOSITORY)
    return Tallies(counts=tally_counts(team_ids), available=tally_counts(team_ids, update_available=True),
                   enforcing=tally_counts(team_ids, enforcing=True),
                   groups=groups, page_number=page.number, top=top,
                   details=_digest_details(shown, {digest for _, _, rows in top.values() for digest, _ in rows}))


def _digest_details(groups, digests):
    """{(group, digest): version, architecture and the tags it was booted by}, for the digests a fleet page shows."""
    group_of = {pair: key for key, pairs in groups.items() for pair in pairs}
    rows = (DigestTally.objects.filter(team_id__in={team_id for team_id, _ in group_of}, booted_digest__in=digests)
            .values("team_id", "booted_image", "booted_digest", "booted_version", "architecture")
            .annotate(n=Sum("n")).filter(n__gt=0).order_by())
    details = {}
    for row in rows:
        key = group_of.get((row["team_id"], row["booted_image"]))
        if key is None:
            continue
        entry = details.setdefault((key, row["booted_digest"]), {"version": row["booted_version"], "tags": set(),
                                                                 "architecture": row["architecture"], "per_tag": {}})
        if row["booted_image"] and ":" in row["booted_image"].rsplit("/", 1)[-1]:
            tag = row["booted_image"].rsplit(":", 1)[-1]
            entry["tags"].add(tag)
            entry["per_tag"][tag] = entry["per_tag"].get(tag, 0) + row["n"]
    return details


def per_stage(counts, team_names, stages, available=None, enforcing=None):
    """Rows of the "hosts per stage" table: per team and stage, in stage order, how many hosts are in each state,
    (from `available`, the counts of hosts with an update available) how many have an update found and not staged,
    and (from `enforcing`) how many booted an image bootc verified under the container policy, and what share of the
    stage's hosts that is. `stages`: {stage_id: Stage}."""
    rows = {}
    available_per_stage, enforcing_per_stage = {}, {}
    for (team_id, stage_id, _, _), n in (available or {}).items():
        available_per_stage[team_id, stage_id] = available_per_stage.get((team_id, stage_id), 0) + n
    for (team_id, stage_id, _, _), n in (enforcing or {}).items():
        enforcing_per_stage[team_id, stage_id] = enforcing_per_stage.get((team_id, stage_id), 0) + n
    for (team_id, stage_id, state, drifting), n in counts.items():
        if team_id not in team_names:
            continue
        stage = stages.get(stage_id)
        row = rows.setdefault((team_names[team_id], stage.position if stage else 1 << 30, stage_id), {
            "team__name": team_names[team_id], "stage__name": stage.name if stage else None,
            "total": 0, "up_to_date": 0, "drifting": 0, "staged": 0, "problems": 0, "rolled_back": 0,
            "team_id": team_id, "update_available": available_per_stage.get((team_id, stage_id), 0),
            "enforcing": enforcing_per_stage.get((team_id, stage_id), 0)})
        row["total"] += n
        row["up_to_date"] += n if state == HostState.UP_TO_DATE else 0
        row["drifting"] += n if drifting else 0
        row["staged"] += n if state == HostState.UPDATE_STAGED else 0
        row["problems"] += n if state in PROBLEM_STATES else 0
        row["rolled_back"] += n if state == HostState.ROLLED_BACK else 0
    out = [row for _, row in sorted(rows.items(), key=lambda item: item[0])]
    for row in out:
        row["not_enforcing"] = row["total"] - row["enforcing"]
        row["enforcing_percent"] = round(100 * row["enforcing"] / row["total"]) if row["total"] else 0
    return out


def page_of(found):
    """The page of repositories `found` holds the digests of."""
    return Paginator(found.groups, GROUPS_PER_PAGE).get_page(found.page_number)


def digest_rows(found, page, team_names):
    """The page's repositories with their most-run digests, newest version first: [((team name, repository), rows)],
    and {(team name, repository): {digests, hosts}} of the digests left out."""
    shown, others = [], {}
    for (team_id, repository), _ in page.object_list:
        key = (team_names.get(team_id, "?"), repository)
        digests, hosts, most_run = found.top.get((team_id, repository), (0, 0, []))
        kept = [{"digest": digest, "n": n, "version": "", "architecture": "", "tags": set(),
                 **found.details.get(((team_id, repository), digest), {})}
                for digest, n in most_run]  # (details of a digest its last host left since: none)
        shown.append((key, sorted(kept, key=lambda e: (e["version"] or "", e["architecture"] or ""), reverse=True)))
        if digests > len(most_run):
            others[key] = {"digests": digests - len(most_run), "hosts": hosts - sum(n for _, n in most_run)}
    return shown, others


SPREAD_COLOURS = 6  # the classes bs-c0 ... bs-c5 of static/hosts/pictures.css


def version_spread(rows, stage_order=None):
    """The version spread of one repository: per stage tag, the digests its hosts boot through it as a stacked bar,
    [(tag, hosts, [{digest, version, n, x, width, colour}])], in the stages' order (`stage_order`: {name: position});
    a digest keeps its colour across the tags. `rows` are the repository's rows of `digest_rows`."""
    order = stage_order or {}
    colour = {row["digest"]: index % SPREAD_COLOURS for index, row in enumerate(rows)}
    for row in rows:
        row["colour"] = colour[row["digest"]]  # the table's swatch: the bars' legend
    per_tag = {}
    for row in rows:
        for tag, n in (row.get("per_tag") or {}).items():
            if n > 0:
                per_tag.setdefault(tag, []).append((row, n))
    bars = []
    for tag in sorted(per_tag, key=lambda t: (order.get(t, 1 << 30), t)):
        total = sum(n for _, n in per_tag[tag])
        parts, x = [], 0.0
        for row, n in per_tag[tag]:
            width = 100.0 * n / total
            parts.append({"digest": row["digest"], "version": row["version"], "n": n, "x": f"{x:.3f}",
                          "width": f"{width:.3f}", "colour": colour[row["digest"]]})
            x += width
        bars.append((tag, total, parts))
    return bars


RUNTIME_TOP = 10  # changes listed per stage


def runtime_groups(team_names, stages, counts):
    """Per team and stage (in the stages' order): how many hosts it has (`counts`, from the tally), how many were read
    and how many changed since they booted, and its RUNTIME_TOP most common changes with the hosts that have each.
    Three queries, whatever the fleet's size: the top changes are ranked per stage by the database (a window)."""
    team_ids = list(team_names)
    groups = {}

    def group(team_id, stage_id):
        stage = stages.get(stage_id)
        return groups.setdefault((team_id, stage_id), {
            "team": team_names.get(team_id, "?"), "stage": stage.name if stage else None, "stage_id": stage_id,
            "order": (team_names.get(team_id, "?"), stage.position if stage else 1 << 30),
            "hosts": 0, "read": 0, "changed": 0, "top": []})

    for (team_id, stage_id, _, _), n in counts.items():
        group(team_id, stage_id)["hosts"] += n
    for row in (HostRuntime.objects.filter(host__team_id__in=team_ids).values("host__team_id", "host__stage_id")
                .annotate(read=Count("id"), changed=Count("id", filter=Q(has_changes=True))).order_by()):
        entry = group(row["host__team_id"], row["host__stage_id"])
        entry["read"], entry["changed"] = row["read"], row["changed"]
    ranked = (RuntimeChange.objects.filter(host__team_id__in=team_ids)
              .values("host__team_id", "host__stage_id", "kind", "name").annotate(n=Count("id"))
              .annotate(rank=Window(RowNumber(), partition_by=[F("host__team_id"), F("host__stage_id")],
                                    order_by=[Count("id").desc(), F("kind"), F("name")]))
              .filter(rank__lte=RUNTIME_TOP).order_by())
    for row in ranked:
        group(row["host__team_id"], row["host__stage_id"])["top"].append(row)
    for entry in groups.values():
        entry["top"].sort(key=lambda row: (-row["n"], row["kind"], row["name"]))
        for row in entry["top"]:
            row["share"] = f"{100.0 * row['n'] / max(entry['hosts'], row['n'], 1):.2f}"
    return [entry for entry in sorted(groups.values(), key=lambda e: e["order"]) if entry["hosts"] or entry["read"]]
