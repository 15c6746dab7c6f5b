#!/usr/bin/env python
"""A 1 GiB disk image downloaded four ways, with the time and the CPU of each process involved.

One conversion's file (random bytes, so nothing compresses it) is stored twice under the same name: on disk under
MEDIA_ROOT, and in a bucket of moto's S3 API server (`moto_server`, on loopback). One daphne serves the portal (SQLite,
a signed-in developer); curl downloads `/disk-images/files/<key>/` as a browser would, following redirects:

- **stream, disk**: DOWNLOADS_VIA=stream, the file on disk: daphne reads and sends it (what every download did before,
  and what `make run` still does). The reference.
- **stream, S3**: DOWNLOADS_VIA=stream, the file in S3: daphne fetches it from object storage and sends it on.
- **presigned, S3**: DOWNLOADS_VIA=presigned: daphne checks access and answers 302; curl fetches the bytes from moto.
- **proxy, disk**: DOWNLOADS_VIA=proxy behind Caddy (Debian's package) with deploy/Caddyfile itself (TLS with a
  certificate made here): daphne answers X-Accel-Redirect, Caddy serves the file from disk.

Each way is measured `--rounds` times (median reported), then a resumed download (`Range: bytes=<half>-`) is checked
to come back 206 with the second half. CPU is per process (utime+stime from /proc): web (daphne), the proxy (Caddy),
the storage (moto) and the client (curl). Results: stdout (Markdown) and bench/downloads/results.json.

    bench/downloads/run [--size-mib 1024] [--rounds 3] [--port-base 8410]
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
BUCKET = "bench-downloads"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def base_env(work, moto_port):
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "S3_", "OBJECT_"))},
        "DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "true", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        "PORTAL_VAR_DIR": str(work / "var"), "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "REDIS_URL": f"unix://{work / 'redis.sock'}", "MEDIA_ROOT": str(work / "protected-media"),
        "S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}", "S3_ACCESS_KEY_ID": "AKIABENCH00000000000",
        "S3_SECRET_ACCESS_KEY": "bench", "S3_REGION": "us-east-1",
    }


PREPARE = r"""
import hashlib, json, os, sys, time
import django; django.setup()
import boto3
from django.conf import settings
from django.core.files import File
from django.test import Client
from builds import services as builds
from builds.diskimages import services as diskimages
from builds.diskimages.models import Artifact, artifact_storage
from builds.models import Build
from portal.models import Run, RunStatus
from portal.services import membership_set, team_create, user_create

source = sys.argv[1]
boto3.client("s3", endpoint_url=settings.S3_ENDPOINT_URL, region_name="us-east-1", aws_access_key_id="x",
             aws_secret_access_key="x").create_bucket(Bucket=settings.S3_BUCKET)
user = user_create(username="dev", password="correct horse battery staple")
team = team_create(name="Platform", actor=None)
membership_set(team=team, user=user, role="developer", actor=None)
definition = builds.definition_create(team=team, user=user, name="web-os")
revision = builds.revision_create(definition=definition, user=user, containerfile="FROM scratch\n")
build = builds.build_start(revision=revision, user=user)
Run.objects.filter(pk=build.run_id).update(status=RunStatus.SUCCEEDED)
Build.objects.filter(pk=build.pk).update(digest="sha256:" + "ab" * 32, architecture="amd64", os="linux",
                                         repository=definition.repository)
build = Build.objects.with_related().get(pk=build.pk)
disk_image = diskimages.disk_image_request(user=user, build=build, types=["raw"])
artifact = Artifact(disk_image=disk_image, image_type="raw", filename="web-os-build-1-amd64.raw", size=0, sha256="")
name = f"disk-images/{disk_image.pk}/{artifact.key}/{artifact.filename}"
started = time.monotonic()
with open(source, "rb") as f:  # what a conversion's last step does: through the portal's storage (multipart upload)
    saved = artifact_storage().save(name, File(f, name=artifact.filename))
upload = time.monotonic() - started
digest = hashlib.sha256()
with open(source, "rb") as f:
    while block := f.read(1 << 20):
        digest.update(block)
artifact.file.name, artifact.size, artifact.sha256 = saved, os.path.getsize(source), digest.hexdigest()
artifact.save()
os.makedirs(os.path.dirname(os.path.join(settings.MEDIA_ROOT, saved)), exist_ok=True)
os.link(source, os.path.join(settings.MEDIA_ROOT, saved))  # the same bytes on disk, under the same name
client = Client()
client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
print(json.dumps({"url": artifact.get_absolute_url(), "cookie": client.cookies["sessionid"].value,
                  "sha256": artifact.sha256, "size": artifact.size, "upload_s": upload}))
"""


class Servers:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.moto_port, self.web_port = args.port_base, args.port_base + 1
        self.https_port, self.http_port, self.registry_port = args.port_base + 2, args.port_base + 3, args.port_base + 4
        self.env = base_env(work, self.moto_port)
        self.procs = []

    def start(self, argv, *, env=None, name):
        out = (self.work / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, cwd=ROOT, env=env or self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(process)
        return process

    def stop(self, process):
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.procs.remove(process)

    def stop_all(self):
        for process in list(self.procs):
            self.stop(process)


def download(url, cookie, *, out, range_from=None, insecure=False, like_a_browser=None):
    """curl, following redirects; returns (status, bytes, seconds, curl's CPU seconds). `like_a_browser`: a path for
    the response headers, and the request says it accepts compressed answers, as browsers do."""
    argv = ["curl", "-s", "-L", "-o", str(out), "-b", f"sessionid={cookie}", "-w", "%{http_code} %{size_download}"]
    if like_a_browser is not None:
        argv += ["--compressed", "-D", str(like_a_browser)]
    if insecure:
        argv.append("-k")
    if range_from is not None:
        argv += ["-r", f"{range_from}-"]
    started = time.monotonic()
    process = subprocess.Popen(argv + [url], stdout=subprocess.PIPE, text=True)
    _, _, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    status, size = process.stdout.read().split()
    process.returncode = 0
    return int(status), int(size), seconds, usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port-base", type=int, default=8410, help="five ports from here (moto, web, Caddy)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-downloads-"))
    (work / "protected-media").mkdir()
    servers = Servers(args, work)
    load_before = os.getloadavg()
    rows, checks = [], []
    try:
        source = work / "source.raw"
        log(f"writing {args.size_mib} MiB of random bytes")
        with source.open("wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        servers.start(["redis-server", "--port", "0", "--unixsocket", str(work / "redis.sock"), "--save", "",
                       "--appendonly", "no"], name="redis")
        moto = servers.start([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                              str(servers.moto_port)], name="moto")
        wait_for(lambda: listening(servers.moto_port), 30, "moto_server")
        env = {**servers.env, "OBJECT_STORAGE": "s3", "DOWNLOADS_VIA": "presigned"}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        prepared = subprocess.run([sys.executable, "-c", PREPARE, str(source)], cwd=ROOT, env=env, check=True,
                                  capture_output=True, text=True)
        facts = json.loads(prepared.stdout.strip().splitlines()[-1])
        log(f"stored {facts['size']:,} bytes in S3 through the portal's storage in {facts['upload_s']:.1f} s")

        ways = [("stream, disk (reference)", "filesystem", "stream", False),
                ("stream, S3", "s3", "stream", False),
                ("presigned, S3", "s3", "presigned", False),
                ("proxy (Caddy), disk", "filesystem", "proxy", True)]
        if shutil.which("caddy") is None:
            log("caddy is not installed (apt-get install caddy): the proxy row is left out")
            ways = ways[:-1]
        for label, storage, via, proxied in ways:
            web_env = {**servers.env, "OBJECT_STORAGE": storage, "DOWNLOADS_VIA": via}
            web = servers.start([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(servers.web_port),
                                 "portal.asgi:application"], env=web_env, name="web")
            caddy = None
            base = f"http://127.0.0.1:{servers.web_port}"
            if proxied:
                cert, key = work / "tls.crt", work / "tls.key"
                if not cert.exists():  # a certificate of its own: Caddy's internal CA would install its root
                    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
                                    "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                                   check=True, capture_output=True)
                caddy_env = {**os.environ, "PORTAL_ADDRESS": "localhost", "CADDY_TLS": f"{cert} {key}",
                             "REGISTRY_ADDRESS": f"localhost:{servers.registry_port}",
                             "PORTAL_UPSTREAMS": f"to 127.0.0.1:{servers.web_port}",
                             "CADDY_HTTPS_PORT": str(servers.https_port), "CADDY_HTTP_PORT": str(servers.http_port),
                             "CADDY_MEDIA_PARENT": str(work), "XDG_DATA_HOME": str(work / "caddy-data"),
                             "XDG_CONFIG_HOME": str(work / "caddy-config")}
                caddy = servers.start(["caddy", "run", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter",
                                       "caddyfile"], env=caddy_env, name="caddy")
                base = f"https://localhost:{servers.https_port}"
            wait_for(lambda: listening(servers.web_port), 60, "daphne")
            if caddy:
                wait_for(lambda: listening(servers.https_port), 60, "caddy")
            url = base + facts["url"]
            target = work / "downloaded.raw"
            # Warm-up, as a browser asks (accepting compression), and check what came.
            headers_file = work / "headers.txt"
            status, _, _, _ = download(url, facts["cookie"], out=target, insecure=proxied, like_a_browser=headers_file)
            with target.open("rb") as f:
                whole = hashlib.file_digest(f, "sha256").hexdigest()
            if status != 200 or whole != facts["sha256"]:
                raise SystemExit(f"{label}: status {status}, sha256 {whole[:12]} (want {facts['sha256'][:12]})")
            final = headers_file.read_text(errors="replace").strip().split("\r\n\r\n")[-1].lower()
            encoded = "content-encoding:" in final
            rounds = []
            for _ in range(args.rounds):
                before = {"web": cpu_seconds(web.pid), "moto": cpu_seconds(moto.pid),
                          "proxy": cpu_seconds(caddy.pid) if caddy else 0.0}
                status, size, seconds, client_cpu = download(url, facts["cookie"], out=target, insecure=proxied)
                time.sleep(0.2)
                after = {"web": cpu_seconds(web.pid), "moto": cpu_seconds(moto.pid),
                         "proxy": cpu_seconds(caddy.pid) if caddy else 0.0}
                assert status == 200 and size == facts["size"], (status, size)
                rounds.append({"seconds": seconds, "client_cpu": client_cpu,
                               **{name: after[name] - before[name] for name in before}})
                log(f"{label}: {seconds:.2f} s, web CPU {rounds[-1]['web']:.2f} s")
            half = facts["size"] // 2
            status, size, _, _ = download(url, facts["cookie"], out=target, range_from=half, insecure=proxied)
            with target.open("rb") as f, source.open("rb") as original:
                original.seek(half)
                resumed_ok = status == 206 and size == facts["size"] - half and f.read(1 << 20) == original.read(1 << 20)
            checks.append({"way": label, "resume_status": status, "resume_bytes": size, "resume_ok": resumed_ok})

            def median(key, rounds=rounds):
                return statistics.median(r[key] for r in rounds)

            rows.append({"way": label, "storage": storage, "downloads_via": via, "rounds": args.rounds,
                         "seconds": round(median("seconds"), 2),
                         "mib_per_s": round(facts["size"] / (1 << 20) / median("seconds"), 1),
                         "web_cpu_s": round(median("web"), 2), "proxy_cpu_s": round(median("proxy"), 2),
                         "storage_cpu_s": round(median("moto"), 2), "client_cpu_s": round(median("client_cpu"), 2),
                         "resumed_206": resumed_ok, "compressed_for_a_browser": encoded,
                         "content_length_for_a_browser": "content-length:" in final})
            if caddy:
                servers.stop(caddy)
            servers.stop(web)
    finally:
        servers.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}",
        "python": platform.python_version(), "load_before": load_before, "load_after": load_after,
        "size_bytes": args.size_mib << 20, "upload_s": round(facts["upload_s"], 2), "rows": rows, "resume": checks,
    }
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['date']}, {result['machine']}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} "
          f"after; {args.size_mib} MiB, median of {args.rounds}")
    print()
    print("| way | time | MiB/s | web CPU | proxy CPU | storage CPU | client CPU | resume (206) | size known, not re-encoded |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['way']} | {row['seconds']:.2f} s | {row['mib_per_s']} | {row['web_cpu_s']:.2f} s | "
              f"{row['proxy_cpu_s']:.2f} s | {row['storage_cpu_s']:.2f} s | {row['client_cpu_s']:.2f} s | "
              f"{'yes' if row['resumed_206'] else 'NO'} | "
              f"{'yes' if row['content_length_for_a_browser'] and not row['compressed_for_a_browser'] else 'NO'} |")


if __name__ == "__main__":
    main()
