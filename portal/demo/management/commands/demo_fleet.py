"""`manage.py demo_fleet`: hosts' `simulate_fleet`, running the demo's own image when `make run` built it.

With --register, the fleet tracks the stage tags of the demo team's definition "web-os" (`portal.demo.web_os`: test
holds its 1.0, dev its 1.1), with the digests the portal built and promoted. It waits for them (up to --wait-demo
seconds; the worker builds them in the background). Where they cannot be built (no podman), or with --demo-os, it runs
simulate_fleet's own demo-os image.
"""

import time

from builds.models import Build
from hosts.management.commands import simulate_fleet
from hosts.management.commands.simulate_fleet import ROLES, _cached_update
from hosts.simbootc import Deployment
from hosts.simulator import demo_digest
from portal.demo import web_os


class Command(simulate_fleet.Command):
    help = "simulate_fleet on the demo's web-os once make run built and promoted it (demo-os otherwise)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--demo-os", action="store_true",
                            help="Track the pushed demo-os image even when the demo team's web-os is built.")
        parser.add_argument("--wait-demo", type=float, default=180.0,
                            help="Seconds to wait for make run to build and promote web-os (with --register).")

    def fleet_image(self, team, *, registry, register, no_seed, demo_os=False, wait_demo=180.0, **options):
        found = self._web_os(team, wait_demo) if register and not (no_seed or demo_os) else None
        if found is None:
            return super().fleet_image(team, registry=registry, register=register, no_seed=no_seed, **options)
        reference, versions, architecture = found
        self.stdout.write(f"the fleet tracks {reference}'s stage tags (the demo's web-os builds)")
        return (lambda state, i: _web_os_state(state, i, reference, versions, architecture)), reference

    def _web_os(self, team, wait):
        """(repository, {version: digest}, architecture) of the demo team's web-os once its test and dev stages hold
        its two builds (make run's worker builds and promotes them); None when it is not coming (no podman, a build
        failed, the wait ran out)."""
        if web_os.missing_tools():
            return None
        deadline = time.monotonic() + wait
        while True:
            definition, held, versions = web_os.stage_digests(team)
            if definition is None:
                return None
            if {"dev", "test"} <= held.keys() and len(versions) == 2:
                build = Build.objects.filter(digest=versions["1.0"]).first()
                return definition.repository, versions, (build.architecture if build else "") or "amd64"
            builds = Build.objects.with_related().filter(definition=definition)
            if any(b.run.is_finished and not b.succeeded for b in builds) or time.monotonic() > deadline:
                self.stderr.write("web-os was not built and promoted in time; the fleet tracks demo-os instead")
                return None
            time.sleep(1)


def _web_os_state(state, i, reference, versions, architecture):
    """The starting state of demo host number i on web-os: test holds 1.0, dev holds 1.1 (portal.demo.web_os)."""
    role = ROLES[i % len(ROLES)]
    state.architecture = architecture

    def deployment(version, tag):
        digest = versions.get(version) or demo_digest(f"{reference}:{version}:{architecture}")
        return Deployment(image=f"{reference}:{tag}", digest=digest, version=version, architecture=architecture,
                          timestamp="2026-01-01T00:00:00Z")

    if role == "web":  # up to date on test, with the image it ran before the portal as its rollback
        state.spec_image = f"{reference}:test"
        state.booted, state.rollback = deployment("1.0", "test"), deployment("0.9", "test")
    elif role == "api":  # dev's 1.1 staged, waiting for a reboot
        state.spec_image = f"{reference}:dev"
        state.booted, state.staged = deployment("1.0", "dev"), deployment("1.1", "dev")
    elif role == "db":  # drifting: still on 1.0 while dev holds 1.1, which an update check found
        state.spec_image = f"{reference}:dev"
        state.booted = deployment("1.0", "dev")
        state.cached_update = _cached_update(state, deployment("1.1", "dev"))
    elif role == "edge":  # dev's 1.1 staged, but it fails its health check: a reboot rolls back automatically
        state.spec_image = f"{reference}:dev"
        state.booted, state.rollback = deployment("1.0", "dev"), deployment("0.9", "dev")
        state.staged = deployment("1.1", "dev")
        state.staged.will_fail_health_check = True
    else:  # cache: on test, with its previous deployment pinned
        state.spec_image = f"{reference}:test"
        state.booted, state.rollback = deployment("1.0", "test"), deployment("0.9", "test")
        state.rollback.pinned = True
