"""`manage.py simulate_fleet --hosts N [--register]`: N simulated bootc hosts speaking real SSH, until Ctrl-C.

Each host listens on its own loopback port (from --base-port) with its own host key; keys and bootc state are kept under
--state-dir, so a restart brings back the same hosts. With --register the hosts are added to a team (the demo team
"Platform" by default) with their host keys confirmed, and accept that team's SSH key. Running it again changes nothing
that is already right.

The hosts track tags of a tiny multi-arch image the command pushes itself (`<registry>/platform/demo-os`, versions
1.0, 1.1 and 1.2; prod and test hold 1.1, dev holds 1.2). `make run` starts `demo_fleet` instead (`portal.demo`), which
runs the same fleet on the demo's own image "web-os" once the portal built and promoted it (`fleet_image` below).

Either way the fleet is varied on purpose: some hosts are up to date, some drift, some have an update staged, and the
`edge` hosts have the next version staged with a health check that fails: reboot one from its page and watch greenboot
roll it back.
"""

import asyncio
import contextlib
import json
import logging
import signal
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from hosts import services, simregistry, simulator
from hosts.models import Host
from hosts.services import team_key_ensure
from hosts.simbootc import Deployment
from hosts.simulator import Fleet
from portal.models import Team

ROLES = ("web", "api", "db", "edge", "cache")
DEMO_REPOSITORY = "platform/demo-os"
DEMO_VERSIONS = {"1.0": [], "1.1": ["prod", "test"], "1.2": ["dev"]}


class Command(BaseCommand):
    help = "Run simulated bootc hosts (real SSH servers on loopback); --register adds them to a team in the portal."

    def add_arguments(self, parser):
        parser.add_argument("--hosts", type=int, default=5)
        parser.add_argument("--register", action="store_true", help="Add the hosts to --team, keys confirmed.")
        parser.add_argument("--team", default="platform", help="Team slug for --register (default: platform).")
        parser.add_argument("--base-port", type=int, default=22200)
        parser.add_argument("--state-dir", default=None, help="Default: VAR_DIR/fleet. 'none' keeps state in memory.")
        parser.add_argument("--registry", default=None, help="Registry for the demo image (default: REGISTRY_URL).")
        parser.add_argument("--reboot-seconds", type=float, default=3.0)
        parser.add_argument("--authorized-key", action="append", default=[], help="Also accept this public key line.")
        parser.add_argument("--no-seed", action="store_true", help="Do not push the demo image to the registry.")
        parser.add_argument("--first", type=int, default=0,
                            help="Number of the first host (names and ports count on from it): a slice of a fleet.")
        parser.add_argument("--manifest", default=None,
                            help="Write one JSON line per host (name, port, host key) to this file once listening.")

    def handle(self, *args, hosts, register, team, base_port, state_dir, registry, reboot_seconds, authorized_key,
               no_seed, first, manifest, **options):
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        if hosts < 1:
            raise CommandError("--hosts must be at least 1.")
        registry = registry or settings.REGISTRY_URL.split("/")[0]
        state_path = None if state_dir == "none" else (state_dir or settings.VAR_DIR / "fleet")
        if state_path is not None:
            state_path = Path(state_path)
            state_path.mkdir(parents=True, exist_ok=True)
        keys = list(authorized_key)
        team_obj = None
        if register:
            team_obj = self._team(team)
            keys.append(team_key_ensure(team=team_obj).public_key)
        if not keys:
            raise CommandError("Nothing may log in: pass --register (the team's key) or --authorized-key.")
        make_state, reference = self.fleet_image(team_obj, registry=registry, register=register, no_seed=no_seed,
                                                 **options)
        fleet = Fleet(authorized_keys=keys, state_dir=state_path, reboot_seconds=reboot_seconds)
        for i in range(first, first + hosts):
            role = ROLES[i % len(ROLES)]
            name = f"{role}-{i // len(ROLES) + 1:02d}"
            fleet.load_or_create(name, port=base_port + i, make_state=lambda state, i=i: make_state(state, i))
        self.manifest = manifest
        asyncio.run(self._serve(fleet, team_obj, reference))

    def _team(self, slug):
        team = Team.objects.filter(slug=slug).first()
        if team is None:
            raise CommandError(f"No team {slug!r}: run `manage.py seed_demo` (make run does) or pass --team.")
        return team

    def fleet_image(self, team, *, registry, register, no_seed, **options):
        """(make_state(state, i), reference): the starting state of host number i, and the repository its hosts track.
        Here: demo-os, pushed to `registry` unless --no-seed."""
        digests = {} if no_seed else self._seed(registry)
        reference = f"{registry}/{DEMO_REPOSITORY}"
        return (lambda state, i: _demo_state(state, i, reference, digests)), reference

    def _seed(self, registry):
        """Push the demo image versions; wait a little for a registry that is still starting. {} if there is none."""
        deadline = time.monotonic() + 15
        while True:
            try:
                out = {}
                for version, tags in DEMO_VERSIONS.items():
                    out[version] = simregistry.push_demo_image(registry, DEMO_REPOSITORY, version=version, tags=tags)
                self.stdout.write(f"demo image {registry}/{DEMO_REPOSITORY}: "
                                  + ", ".join(f"{v} ({', '.join(t) or 'untagged'})" for v, t in DEMO_VERSIONS.items()))
                return out
            except simregistry.RegistryError as exc:
                if time.monotonic() > deadline:
                    self.stderr.write(f"no registry at {registry} ({exc}); hosts run without updates to pull")
                    return {}
                time.sleep(0.5)

    async def _serve(self, fleet, team, reference):
        await fleet.start_all()
        for host in fleet.hosts.values():
            if host.acceptor is None and not host.faults["down"]:
                self.stderr.write(f"{host.name}: could not listen on 127.0.0.1:{host.port}")
        # Faults the demo wants: the edge hosts fail their health check on the next boot.
        for host in fleet.hosts.values():
            if host.name.startswith("edge-") and host.state.staged is not None:
                host.faults["fail_health_check"] = True
                host.state.staged.will_fail_health_check = True
        if team is not None:
            registered = await asyncio.to_thread(_register, fleet, team, reference)
            self.stdout.write(f"registered {registered} new host(s) in {team}")
        if self.manifest:
            lines = [json.dumps({"name": h.name, "port": h.port, "host_key": h.public_host_key(),
                                 "image": h.state.spec_image, "architecture": h.state.architecture})
                     for h in fleet.hosts.values()]
            Path(self.manifest).write_text("\n".join(lines) + "\n")
        self.stdout.write(f"{len(fleet.hosts)} simulated bootc hosts on 127.0.0.1 ports "
                          f"{min(h.port for h in fleet.hosts.values())}-{max(h.port for h in fleet.hosts.values())}")
        self.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await fleet.stop_all()


def _cached_update(state, update):
    """bootc's cachedUpdate for the host's image: what an update check found (`update`, a Deployment)."""
    return {"architecture": update.architecture, "image": {"image": state.spec_image, "transport": "registry"},
            "imageDigest": update.digest, "timestamp": update.timestamp, "version": update.version}


def _demo_state(state, i, reference, digests):
    """The starting bootc state of demo host number i: varied, so the fleet views have something to show."""
    role = ROLES[i % len(ROLES)]
    arch = "arm64" if i % 7 == 6 else "amd64"
    state.architecture = arch

    def deployment(version, tag):
        digest = (digests.get(version) or {}).get(arch) or simulator.demo_digest(f"{reference}:{version}:{arch}")
        return Deployment(image=f"{reference}:{tag}", digest=digest, version=version, architecture=arch,
                          timestamp="2026-01-01T00:00:00Z")

    if role == "web":  # up to date on prod
        state.spec_image = f"{reference}:prod"
        state.booted, state.rollback = deployment("1.1", "prod"), deployment("1.0", "prod")
    elif role == "api":  # prod's digest staged, waiting for a reboot
        state.spec_image = f"{reference}:prod"
        state.booted, state.staged = deployment("1.0", "prod"), deployment("1.1", "prod")
    elif role == "db":  # drifting: still on 1.0, an update check found 1.1
        state.spec_image = f"{reference}:prod"
        state.booted = deployment("1.0", "prod")
        state.cached_update = _cached_update(state, deployment("1.1", "prod"))
    elif role == "edge":  # dev's 1.2 staged, but it fails its health check: a reboot rolls back automatically
        state.spec_image = f"{reference}:dev"
        state.booted, state.rollback = deployment("1.1", "dev"), deployment("1.0", "dev")
        state.staged = deployment("1.2", "dev")
        state.staged.will_fail_health_check = True
    else:  # cache: on test, with its previous deployment pinned
        state.spec_image = f"{reference}:test"
        state.booted, state.rollback = deployment("1.1", "test"), deployment("1.0", "test")
        state.rollback.pinned = True



def _register(fleet, team, reference):
    stages = {stage.name: stage for stage in team.stages.all()}
    created = 0
    for sim in fleet.hosts.values():
        tag = sim.state.spec_image.rsplit(":", 1)[-1]
        role = sim.name.split("-")[0]
        key = sim.public_host_key()
        with transaction.atomic():
            host = Host.objects.filter(team=team, name=sim.name).first()
            if host is None:
                services.host_create(
                    team=team, name=sim.name, address="127.0.0.1", port=sim.port, actor=None, ssh_user="root",
                    labels=f"simulated {role} {sim.state.architecture}", stage=stages.get(tag),
                    tracked_image=sim.state.spec_image, host_key=key,
                    audit_summary=f"the fleet simulator registered {sim.name} (127.0.0.1:{sim.port})", poll_now=False,
                )
                created += 1
                continue
            if (host.address, host.port) != ("127.0.0.1", sim.port):
                services.host_update(host=host, actor=None, address="127.0.0.1", port=sim.port)
            if host.host_key.split()[1:2] != key.split()[1:2]:
                services.host_confirm_key(host=host, key=key, actor=None)
    return created
