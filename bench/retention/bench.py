#!/usr/bin/env python
"""The database after a simulated year at the demo fleet's pace, with and without retention.

A PostgreSQL 15 cluster of the benchmark's own (initdb in a temporary directory, loopback only) holds two databases
that a generator fills day by day with the same year (the same seed): one never pruned, the other with a retention
pass (`portal.retention.retention_run`, the one beat runs) at the end of every simulated day, with the default
settings (logs archived after 30 days, snapshots thinned after 14, deliveries and login records after 90). Archived
logs go to a directory (OBJECT_STORAGE=filesystem), whose size is reported apart.

The pace, per day (the demo's team and its five simulated hosts, `make run`):
- runs: 6 builds of 2,500 log lines, 1 disk-image conversion of 1,500, 2 promotions of 40, 1 host action of 120 (lines
  like podman's and bib's: package names, versions, digests), written in chunks as the log sink writes them;
- host snapshots: 5 hosts polled every minute; bootc's output changes every 2 hours without a change of state (a new
  fetch time of the cached update), and each host stages then boots a new digest twice a week (events on its timeline);
- 10 webhook deliveries, 20 sign-ins and 5 failed sign-ins.

Sizes are PostgreSQL's after a plain VACUUM (what autovacuum leaves: space freed by deletes is reused, not returned)
and after VACUUM FULL (the live data). Results: stdout (Markdown) and bench/retention/results.json.

    bench/retention/run [--days 365]
"""

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

RUNS_PER_DAY = [("build", 6, 2500), ("disk_image", 1, 1500), ("promotion_apply", 2, 40), ("host_action", 1, 120)]
HOSTS = 5
NOISE_EVERY_HOURS = 2
REAL_CHANGES_PER_WEEK = 2
DELIVERIES_PER_DAY = 10
LOGINS_PER_DAY = 20
FAILED_LOGINS_PER_DAY = 5
TABLES = ["portal_logchunk", "portal_logsection", "portal_run", "portal_logarchive", "hosts_hostsnapshot",
          "hosts_hostevent", "portal_webhookdelivery", "axes_accesslog", "axes_accessattempt", "portal_auditevent",
          "portal_retentionrun"]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb + pg_ctl as the postgres user, in a temporary directory, on a free loopback port (trust logins)."""

    def __init__(self):
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="bench-retention-pg-"))
        self.port = free_port()
        shutil.chown(self.dir, "postgres")
        self.as_postgres([self.bin / "initdb", "-D", self.dir / "data", "-U", "postgres", "-A", "trust"])
        self.as_postgres([self.bin / "pg_ctl", "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    def url(self, database):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def as_postgres(self, args):
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, stdout=subprocess.DEVNULL)

    def createdb(self, name):
        self.as_postgres([self.bin / "createdb", "-h", "127.0.0.1", "-p", self.port, name])

    def stop(self):
        self.as_postgres([self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


# --- The generator (runs in a child process, with Django set up on one database) ------------------------------------

WORDS = ("kernel glibc systemd openssl python3 bash coreutils dnf rpm podman skopeo bootc ostree grub2 shim "
         "NetworkManager sudo vim-minimal less tar gzip xz zstd libselinux selinux-policy firewalld chrony cloud-init "
         "qemu-guest-agent tuned lvm2 xfsprogs e2fsprogs dosfstools mdadm cryptsetup tpm2-tools").split()


def log_lines(rng, kind, count):
    """Lines shaped like the tools': dnf transactions, podman steps and digests, osbuild stages."""
    lines = []
    for n in range(1, count + 1):
        pick = rng.random()
        word = rng.choice(WORDS)
        version = f"{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}-{rng.randint(1, 30)}.el9"
        if n % 400 == 1:
            lines.append(f"STEP {n // 400 + 1}/7: RUN dnf -y install {word} && dnf clean all")
        elif pick < 0.55:
            lines.append(f"  Installing       : {word}-{version}.x86_64{' ' * rng.randint(1, 20)}{n % 700}/700")
        elif pick < 0.75:
            lines.append(f"  Verifying        : {word}-libs-{version}.x86_64{' ' * rng.randint(1, 20)}{n % 700}/700")
        elif pick < 0.85:
            lines.append(f"Copying blob sha256:{rng.getrandbits(256):064x}")
        elif pick < 0.92:
            lines.append(f"org.osbuild.{word}: {rng.getrandbits(256):064x} {{")
        else:
            lines.append(f"{kind}: {word} {version} done in {rng.random() * 9:.3f}s")
    return lines


def status_raw(rng, host, booted, staged, rollback, fetched):
    def entry(digest, version, cached=None):
        return {"cachedUpdate": cached, "composefs": None, "downloadOnly": False,
                "image": {"architecture": "amd64", "image": {"image": "registry.example.com/platform/web-os:prod",
                                                             "transport": "registry"},
                          "imageDigest": digest, "timestamp": "2026-01-01T00:00:00Z", "version": version},
                "incompatible": False, "ostree": {"checksum": digest[7:71], "deploySerial": 0, "stateroot": "default"},
                "pinned": False, "softRebootCapable": False, "store": "ostreeContainer"}

    cached = {"architecture": "amd64", "image": {"image": "registry.example.com/platform/web-os:prod",
                                                 "transport": "registry"},
              "imageDigest": booted[0], "timestamp": fetched, "version": booted[1]}
    document = {"apiVersion": "org.containers.bootc/v1", "kind": "BootcHost", "metadata": {"name": host},
                "spec": {"bootOrder": "default", "image": {"image": "registry.example.com/platform/web-os:prod",
                                                           "transport": "registry"}},
                "status": {"booted": entry(*booted, cached=cached), "readOnly": False,
                           "rollback": entry(*rollback) if rollback else None, "rollbackQueued": False,
                           "staged": entry(*staged) if staged else None, "type": "bootcHost", "usrOverlay": None}}
    return json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n"


def child(args):
    import django

    django.setup()
    import hashlib

    from axes.models import AccessAttempt, AccessLog
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from hosts import bootc
    from hosts.models import EventKind, Host, HostEvent, HostSnapshot
    from portal import retention
    from portal.models import LogChunk, LogSection, NotificationWebhook, Run, RunStatus, WebhookDelivery
    from portal.services import membership_set, team_create, user_create

    call_command("migrate", verbosity=0)
    rng = random.Random(2026)
    user = user_create(username="developer", password="correct horse battery staple")
    team = team_create(name="Platform", actor=None)
    membership_set(team=team, user=user, role="developer", actor=None)
    hook = NotificationWebhook.objects.create(team=team, name="ci", url="https://ci.example.com/hook", secret="s",
                                              events=["build.failed"])
    hosts = [Host.objects.create(team=team, name=f"web-{n:02d}", address="127.0.0.1", port=22000 + n)
             for n in range(HOSTS)]
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=args.days)
    versions = {h.pk: [(f"sha256:{rng.getrandbits(256):064x}", "1.0"), None, None] for h in hosts}
    passes, generated_lines = [], 0
    began = time.monotonic()
    for day in range(args.days):
        midnight = start + timedelta(days=day)
        # Runs and their logs.
        for kind, count, lines in RUNS_PER_DAY:
            for n in range(count):
                at = midnight + timedelta(hours=8 + n, minutes=rng.randint(0, 59))
                run = Run.objects.create(kind=kind, title=f"{kind} {day}-{n}", team=team, started_by=user,
                                         status=RunStatus.SUCCEEDED, created_at=at, started_at=at,
                                         finished_at=at + timedelta(minutes=5), log_lines=lines)
                text = log_lines(rng, kind, lines)
                generated_lines += lines
                LogChunk.objects.bulk_create([
                    LogChunk(run=run, first_seq=first + 1, last_seq=min(first + 500, lines),
                             created_at=at + timedelta(seconds=first // 10), text="\n".join(text[first:first + 500]),
                             offsets_ms=",".join(str(rng.randint(0, 25)) for _ in text[first:first + 500]))
                    for first in range(0, lines, 500)])
                LogSection.objects.bulk_create([LogSection(run=run, seq=seq, kind="step", title=text[seq - 1][:200],
                                                           started_at=at) for seq in range(1, lines + 1, 400)])
        # Host snapshots: output noise every NOISE_EVERY_HOURS, real changes twice a week.
        snapshots, events = [], []
        for host in hosts:
            booted, staged, rollback = versions[host.pk]
            for hour in range(0, 24, NOISE_EVERY_HOURS):
                at = midnight + timedelta(hours=hour, minutes=host.pk % 60)
                if rng.random() < REAL_CHANGES_PER_WEEK / 7 / (24 / NOISE_EVERY_HOURS) * 2:
                    if staged is None:
                        staged = (f"sha256:{rng.getrandbits(256):064x}", f"1.{day}")
                        events.append(HostEvent(host=host, at=at, kind=EventKind.STAGED, summary="staged",
                                                digest=staged[0]))
                    else:
                        rollback, booted, staged = booted, staged, None
                        events.append(HostEvent(host=host, at=at, kind=EventKind.BOOTED, summary="booted",
                                                digest=booted[0]))
                raw = status_raw(rng, host.name, booted, staged, rollback, fetched=at.isoformat())
                parsed = bootc.parse_status(raw).to_dict()
                snapshots.append(HostSnapshot(host=host, taken_at=at, raw=raw, parsed=parsed,
                                              status_hash=hashlib.sha256(raw.encode()).hexdigest()))
            versions[host.pk] = [booted, staged, rollback]
        HostSnapshot.objects.bulk_create(snapshots)
        HostEvent.objects.bulk_create(events)
        # Webhook deliveries and sign-ins.
        WebhookDelivery.objects.bulk_create([
            WebhookDelivery(webhook=hook, event="build.failed", delivery_id=f"{day}-{n}", status="delivered",
                            payload={"event": "build.failed", "build": {"number": day * 10 + n, "log": "x" * 600}},
                            created_at=midnight + timedelta(hours=9, minutes=n), attempts=1, response_code=200)
            for n in range(DELIVERIES_PER_DAY)])
        logins = AccessLog.objects.bulk_create([AccessLog(username="developer", ip_address="192.0.2.10",
                                                          user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
                                                          http_accept="text/html", path_info="/login/")
                                                for _ in range(LOGINS_PER_DAY)])
        AccessLog.objects.filter(pk__in=[row.pk for row in logins]).update(attempt_time=midnight + timedelta(hours=9))
        failures = AccessAttempt.objects.bulk_create([
            AccessAttempt(username=f"guess{day}-{n}", ip_address="198.51.100.7", user_agent="curl/8",
                          get_data="", post_data="username=guess", failures_since_start=1, http_accept="*/*",
                          path_info="/login/") for n in range(FAILED_LOGINS_PER_DAY)])
        AccessAttempt.objects.filter(pk__in=[row.pk for row in failures]).update(attempt_time=midnight)
        if args.retention:
            record = retention.retention_run(now=midnight + timedelta(hours=23, minutes=30))
            passes.append({name: entry["count"] for name, entry in record.removed.items()})
            if record.errors:
                raise SystemExit(f"retention failed on day {day}: {record.errors}")
        if day % 30 == 29:
            log(f"{'with' if args.retention else 'without'} retention: day {day + 1}, "
                f"{time.monotonic() - began:.0f} s")
    generation = time.monotonic() - began

    def sizes():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            total = cursor.fetchone()[0]
            tables = {}
            for table in TABLES:
                cursor.execute("SELECT pg_total_relation_size(%s)", [table])
                tables[table] = cursor.fetchone()[0]
        return total, tables

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    vacuumed, vacuumed_tables = sizes()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM FULL")
    full, full_tables = sizes()
    counts = {"runs": Run.objects.count(), "log_chunks": LogChunk.objects.count(),
              "host_snapshots": HostSnapshot.objects.count(), "host_events": HostEvent.objects.count(),
              "webhook_deliveries": WebhookDelivery.objects.count(), "logins": AccessLog.objects.count(),
              "failed_logins": AccessAttempt.objects.count()}
    archive_bytes = sum(f.stat().st_size for f in Path(os.environ["MEDIA_ROOT"]).rglob("*") if f.is_file())
    removed = {}
    for entry in passes:
        for name, count in entry.items():
            removed[name] = removed.get(name, 0) + count
    print(json.dumps({"retention": args.retention, "days": args.days, "generated_lines": generated_lines,
                      "generation_s": round(generation, 1), "database_bytes": vacuumed,
                      "database_bytes_vacuum_full": full, "tables": vacuumed_tables, "tables_vacuum_full": full_tables,
                      "rows": counts, "archive_bytes": archive_bytes, "removed_over_the_year": removed,
                      "passes": len(passes)}))


def mib(n):
    return f"{n / (1 << 20):,.1f} MiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--retention", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    cluster = Cluster()
    work = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    load_before = os.getloadavg()
    results = {}
    try:
        for with_retention in (False, True):
            name = "with" if with_retention else "without"
            cluster.createdb(f"year_{name}")
            env = {**{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
                   "DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "true", "LOG_LEVEL": "WARNING",
                   "DATABASE_URL": cluster.url(f"year_{name}"), "PORTAL_VAR_DIR": str(work / name / "var"),
                   "MEDIA_ROOT": str(work / name / "media"), "OBJECT_STORAGE": "filesystem",
                   "AUDIT_CHECKPOINT_PATH": str(work / name / "checkpoints.jsonl")}
            (work / name / "media").mkdir(parents=True)
            argv = [sys.executable, __file__, "--child", "--days", str(args.days)] + (["--retention"] if with_retention
                                                                                     else [])
            done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-4000:])
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            log(f"{name}: {mib(results[name]['database_bytes'])} after {results[name]['generation_s']} s")
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    summary = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {platform.platform()}",
               "load_before": load_before, "load_after": load_after, "days": args.days, **results}
    (HERE / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    without, with_ = results["without"], results["with"]
    print(f"{summary['date']}, {summary['machine']}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} "
          f"after; {args.days} simulated days, {without['generated_lines']:,} log lines")
    print()
    print("| | without retention | with retention |")
    print("|---|---|---|")
    print(f"| database (after VACUUM, as autovacuum leaves it) | {mib(without['database_bytes'])} | "
          f"{mib(with_['database_bytes'])} |")
    print(f"| database (after VACUUM FULL: the live data) | {mib(without['database_bytes_vacuum_full'])} | "
          f"{mib(with_['database_bytes_vacuum_full'])} |")
    for table in TABLES:
        print(f"| {table} | {mib(without['tables'][table])} | {mib(with_['tables'][table])} |")
    for key in without["rows"]:
        print(f"| rows: {key.replace('_', ' ')} | {without['rows'][key]:,} | {with_['rows'][key]:,} |")
    print(f"| archived logs in object storage | – | {mib(with_['archive_bytes'])} |")
    print(f"| generating the year (and, with, {with_['passes']} passes) | {without['generation_s']} s | "
          f"{with_['generation_s']} s |")
    print()
    print(f"Removed over the year by the passes: {with_['removed_over_the_year']}")


if __name__ == "__main__":
    main()
