"""What `/metrics` tells Prometheus about the portal as a whole, read at scrape time from the database and Redis.

web, the workers and beat are separate processes (in production, separate containers on several machines), and most
of what the portal does happens in the workers, which serve no HTTP. So nothing here is counted in a process's memory:
each scrape reads the shared state every process writes anyway.

- Runs (`portal.models.Run`, one row per build, conversion, promotion applied or host action): started, finished by
  status, their durations as a histogram and the log lines written, per kind. A row is counted from the moment a
  worker writes it, whichever process scrapes. These are counters because runs only ever start and end; they can
  drop only when rows are deleted (a team deleted with its runs), which Prometheus's `rate()` treats as a reset.
- Celery's queue depths, from the broker's lists in Redis (one LLEN per queue and priority).
- Gauges the features register through `portal.registry.gauge` (hosts per state, poll lag, promotions waiting,
  builder load), read by their own functions.

Every replica answers the same numbers for these (`portal_*`): a dashboard takes `max` over instances. django-prometheus's
`django_http_*` and `django_db_*` are the scraped process's own, one series per replica: a dashboard sums them. Why
not prometheus_client's multiprocess mode: it shares a directory between the processes of one machine, and the
portal's workers run in other containers and on other machines.

A source that cannot be read (Redis down, a feature's query failing) is left out of that scrape and flagged in
`portal_metrics_read_errors{source}`, so the rest still arrives.
"""

from __future__ import annotations

import copy
import hmac
import ipaddress
import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from . import registry
from .celery import QUEUES
from .clientip import client_ip
from .models import ACTIVE_STATUSES, FINISHED_STATUSES, Run, RunKind, RunStatus
from .redisconn import client
from .workers import alive

log = logging.getLogger(__name__)

# Upper bounds of the run duration histogram, in seconds: a host action takes seconds, a build minutes, a disk image
# up to hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# kombu's Redis transport keeps a queue's tasks of priority 0 in the list named after the queue and the others in
# "<queue>\x06\x16<priority>".
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"


class PortalCollector(Collector):
    """The portal's own metrics, collected at each scrape (registered once per process in `PortalConfig.ready`)."""

    def describe(self):
        """Nothing, so that registering reads no table: without it prometheus_client would collect once to learn
        the names, at start-up, before the database may even be migrated."""
        return []

    def collect(self):
        errors = {}
        for source, read in (("runs", _runs), ("queues", _queues), ("features", _features)):
            try:
                yield from read()
            except Exception as exc:  # noqa: BLE001 - one source failing must not hide the others
                log.warning("metrics: %s not read: %s: %s", source, type(exc).__name__, exc)
                errors[source] = 1
        failing = GaugeMetricFamily("portal_metrics_read_errors", "Sources of /metrics that could not be read in this "
                                    "scrape (1) and left out of it.", labels=["source"])
        for source in ("runs", "queues", "features"):
            failing.add_metric([source], errors.get(source, 0))
        yield failing


@dataclass
class Tally:
    """What the runs of one (kind, status) add up to."""

    n: int = 0
    started: int = 0
    lines: int = 0
    timed: int = 0  # runs with a start and an end: those in the histogram
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))

    def add(self, other: Tally) -> None:
        self.n += other.n
        self.started += other.started
        self.lines += other.lines
        self.timed += other.timed
        self.seconds += other.seconds
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


def tally(runs) -> dict[tuple[str, str], Tally]:
    """{(kind, status): Tally} of a queryset of runs, in one grouped query."""
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    buckets = {f"le{i}": Count("id", filter=Q(took__lte=timedelta(seconds=le))) for i, le in enumerate(DURATION_BUCKETS)}
    rows = (runs.annotate(took=took).values("kind", "status").order_by()
            .annotate(n=Count("id"), started=Count("id", filter=Q(started_at__isnull=False)), lines=Sum("log_lines"),
                      timed=Count("took"), total=Sum("took"), **buckets))
    return {(row["kind"], row["status"]): Tally(
        n=row["n"], started=row["started"], lines=row["lines"] or 0, timed=row["timed"],
        seconds=row["total"].total_seconds() if row["total"] is not None else 0.0,
        buckets=[row[f"le{i}"] for i in range(len(DURATION_BUCKETS))]) for row in rows}


class SettledRuns:
    """The tallies of runs created before the horizon, kept in this process and extended as the horizon moves: a run
    that old has ended and will not change again (a queued run expires after RUN_QUEUED_EXPIRES_AFTER, a running one
    is stopped at CELERY_TASK_TIME_LIMIT or reaped when its heartbeat stops), so each scrape reads only the runs of
    the last day or so (on the index of `created_at`) instead of the whole table. The first scrape of a process reads
    everything once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.upto = None
        self.tallies: dict[tuple[str, str], Tally] = {}

    @staticmethod
    def horizon():
        margin = settings.RUN_QUEUED_EXPIRES_AFTER + timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT) + timedelta(hours=1)
        return timezone.now() - margin

    def read(self):
        """(the settled tallies, the horizon they reach)."""
        with self.lock:
            horizon = self.horizon()
            older = Run.objects.filter(created_at__lt=horizon)
            if self.upto is not None:
                older = older.filter(created_at__gte=self.upto)
            for key, more in tally(older).items():
                self.tallies.setdefault(key, Tally()).add(more)
            self.upto = horizon
            return {key: copy.deepcopy(value) for key, value in self.tallies.items()}, horizon


settled_runs = SettledRuns()


def _runs():
    kinds = list(RunKind.values)
    started = CounterMetricFamily("portal_runs_started", "Runs a worker has started, by kind.", labels=["kind"])
    finished = CounterMetricFamily("portal_runs_finished", "Runs that ended, by kind and status (succeeded, failed, "
                                   "cancelled).", labels=["kind", "status"])
    active = GaugeMetricFamily("portal_runs_active", "Runs queued or running now, by kind and status.",
                               labels=["kind", "status"])
    lines = CounterMetricFamily("portal_log_lines_written", "Log lines written by runs, by kind.", labels=["kind"])
    durations = HistogramMetricFamily("portal_run_duration_seconds", "How long finished runs ran, from start to end, "
                                      "by kind.", labels=["kind"])

    counts, horizon = settled_runs.read()
    for key, more in tally(Run.objects.filter(created_at__gte=horizon)).items():
        counts.setdefault(key, Tally()).add(more)
    for kind in kinds:
        of_kind = [counts.get((kind, status), Tally()) for status in RunStatus.values]
        started.add_metric([kind], sum(t.started for t in of_kind))
        lines.add_metric([kind], sum(t.lines for t in of_kind))
        for status in FINISHED_STATUSES:
            finished.add_metric([kind, status], counts.get((kind, status), Tally()).n)
        for status in ACTIVE_STATUSES:
            active.add_metric([kind, status], counts.get((kind, status), Tally()).n)
        ended = [counts.get((kind, status), Tally()) for status in FINISHED_STATUSES]
        cumulative = [(str(float(le)), sum(t.buckets[i] for t in ended)) for i, le in enumerate(DURATION_BUCKETS)]
        durations.add_metric([kind], [*cumulative, ("+Inf", sum(t.timed for t in ended))],
                             sum_value=sum(t.seconds for t in ended))
    yield from (started, finished, active, lines, durations)


def queue_names():
    """The Celery queues to report: the portal's own, those live workers consume (their heartbeats) and those the
    features send to (`portal.registry.queues`)."""
    names = set(QUEUES)
    names.update(queue for worker in alive() for queue in worker.queues)
    for read in registry.queue_readers():
        names.update(read())
    return sorted(names)


def _queues():
    names = queue_names()
    pipe = client().pipeline(transaction=False)
    for name in names:
        for step in PRIORITY_STEPS:
            pipe.llen(name if step == 0 else f"{name}{PRIORITY_SEPARATOR}{step}")
    lengths = pipe.execute()
    depth = GaugeMetricFamily("portal_queue_depth", "Tasks waiting in a Celery queue (not yet taken by a worker).",
                              labels=["queue"])
    for i, name in enumerate(names):
        depth.add_metric([name], sum(lengths[i * len(PRIORITY_STEPS):(i + 1) * len(PRIORITY_STEPS)]))
    yield depth


class PartlyRead(Exception):
    """Some of the features' gauges could not be read; the others were given out."""


def _features():
    families, totals, failed = {}, {}, []
    for entry in registry.gauges():
        try:
            read = entry.read()
        except Exception as exc:  # noqa: BLE001 - one feature's failure leaves the others' gauges in the scrape
            failed.append(f"{entry.name}: {type(exc).__name__}: {exc}")
            continue
        family = families.get(entry.name)
        if family is None:
            family = families[entry.name] = GaugeMetricFamily(entry.name, entry.documentation, labels=list(entry.labels))
        samples = totals.setdefault(entry.name, {})
        for labels, value in read.items():
            key = tuple(str(v) for v in labels)
            samples[key] = samples.get(key, 0) + value
    for name, family in families.items():
        for labels, value in totals[name].items():
            family.add_metric(list(labels), value)
    yield from families.values()
    if failed:
        raise PartlyRead("; ".join(failed))


def allowed(request):
    """Whether this request may read /metrics, and if not, the sentence that says why (for the 403)."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode("utf-8", "replace"),
                                                              token.encode("utf-8")):
            return True, ""
    networks = settings.METRICS_ALLOWED_NETWORKS
    if networks:
        address = client_ip(request)
        if address is not None and _in_networks(address, tuple(networks)):
            return True, ""
    if not token and not networks:
        return False, ("Metrics are off: set METRICS_TOKEN (scrapers send `Authorization: Bearer <token>`) or "
                       "METRICS_ALLOWED_NETWORKS (the scrapers' addresses). See docs/operations.md#metrics.")
    ways = []
    if token:
        ways.append("send `Authorization: Bearer <METRICS_TOKEN>`")
    if networks:
        ways.append(f"scrape from an address in METRICS_ALLOWED_NETWORKS (this request came from "
                    f"{client_ip(request) or 'an unknown address'})")
    return False, "Metrics need a scraper that may read them: " + " or ".join(ways) + "."


def _in_networks(address, networks):
    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)
