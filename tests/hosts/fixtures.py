"""Real parts for the host tests: the fleet simulator (real SSH servers on loopback, in a thread of the test process),
with its hosts registered in the personas' team and the team's key authorized.

The fixtures made of them (host_settings, team_key, fleet, demo_images) are in tests/hosts/conftest.py.
"""

import logging

from hosts import services
from hosts.models import Host
from hosts.simbootc import Deployment
from hosts.simulator import Fleet
from portal import sshpool
from tests.helpers import allow_egress

REPOSITORY = "platform/web-os"

logging.getLogger("asyncssh").setLevel(logging.WARNING)
logging.getLogger("paramiko").setLevel(logging.WARNING)


def booted_state(reference, digest="sha256:" + "a" * 64, version="1.0", architecture="amd64"):
    def make(state):
        state.architecture = architecture
        state.spec_image = reference
        state.booted = Deployment(image=reference, digest=digest, version=version, architecture=architecture)
        state.rollback = Deployment(image=reference, digest="sha256:" + "0" * 64, version="0.9",
                                    architecture=architecture)
    return make


class FleetForTests:
    """A simulated fleet in a background thread, and its hosts as portal Host rows of one team."""

    def __init__(self, team, team_key, reboot_seconds=0.2):
        self.team = team
        self.fleet = Fleet(authorized_keys=[team_key.public_key], reboot_seconds=reboot_seconds)
        self.started = False

    def add(self, name, make_state):
        assert not self.started, "add hosts before start()"
        return self.fleet.load_or_create(name, make_state=make_state)

    def start(self, register=True, **host_fields):
        sshpool.reset_shared()  # no connection left by an earlier test that used SSH without a fleet
        self.fleet.start_in_thread()
        self.started = True
        # The registries the simulated hosts report: the egress policy lets the portal resolve those references.
        registries = {sim.state.spec_image.split("/", 1)[0] for sim in self.fleet.hosts.values() if sim.state.spec_image}
        self.disallow = allow_egress(*sorted(registries))
        hosts = {}
        if register:
            for sim in self.fleet.hosts.values():
                hosts[sim.name] = services.host_create(
                    team=self.team, name=sim.name, address="127.0.0.1", port=sim.port, actor=None,
                    tracked_image=sim.state.spec_image, host_key=sim.public_host_key(), **host_fields,
                )
        return hosts

    def sim(self, name):
        return self.fleet.hosts[name]

    def host(self, name):
        return Host.objects.get(team=self.team, name=name)

    def stop(self):
        if self.started:
            sshpool.reset_shared()  # the next test's hosts get connections of their own
            self.fleet.stop_thread()
            self.disallow()


# --- A real OpenSSH server with a scripted bootc --------------------------------------------------------------------

SCRIPTED_BOOTC = """#!/bin/sh
# A stand-in for bootc on a machine that has none: prints the status document it was given.
if [ "$1" = status ]; then exec cat "{status}"; fi
echo "error: this scripted bootc only answers status (got: $*)" >&2
exit 1
"""


class SshdServer:
    """/usr/sbin/sshd on a loopback port with its own host key, PidFile and config (machine-notes.md): UsePAM no, key
    logins only, and `SetEnv PATH=...` so a scripted `bootc` comes first. Logs to `log_path`."""

    def __init__(self, directory, *, authorized_keys, status_path, port=None, max_startups="200:30:400"):
        import subprocess
        from pathlib import Path

        from tests.helpers import free_port

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        key_path = self.directory / "ssh_host_ed25519_key"
        if not key_path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_path)], check=True)
        self.host_key = " ".join((self.directory / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        bindir = self.directory / "bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "bootc").write_text(SCRIPTED_BOOTC.format(status=status_path))
        (bindir / "bootc").chmod(0o755)
        home = self.directory / "home"
        home.mkdir(exist_ok=True)
        (self.directory / "authorized_keys").write_text("\n".join(authorized_keys) + "\n")
        (self.directory / "authorized_keys").chmod(0o600)
        config = self.directory / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {key_path}",
            f"PidFile {self.directory / 'sshd.pid'}", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            f"AuthorizedKeysFile {self.directory / 'authorized_keys'}", "StrictModes no", "UseDNS no",
            f"MaxStartups {max_startups}", "MaxSessions 100", "LogLevel INFO",
            f"SetEnv PATH={bindir}:/usr/local/bin:/usr/bin:/bin HOME={home}", "PrintMotd no",
        ]) + "\n")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.log_path = self.directory / "sshd.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self._wait()

    def _wait(self):
        import socket

        from tests.helpers import wait_for

        def answers():
            if self.process.poll() is not None:
                raise AssertionError(f"sshd exited: {self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(answers, timeout=10, what="sshd to listen")

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()
