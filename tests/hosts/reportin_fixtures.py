"""What the report-in tests share: bootc status documents made by the simulator's own state machine, and an agent
talking to the portal through Django's test client."""

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from django.test import Client
from django.urls import reverse

from hosts import agent_dist, reportin
from hosts.simbootc import FAULTS, BootcMachine, Deployment, HostState
from portal.packages import PACKAGE_SCRIPT

REPO_ROOT = Path(__file__).resolve().parents[2]
SimState = HostState

REFERENCE = "registry.example.com/platform/web-os:prod"


def status_json(digest="sha256:" + "a" * 64, version="1.0", staged=None, reference=REFERENCE):
    """`bootc status --format=json` of a simulated host booting `digest` (and staging `staged`)."""
    machine = BootcMachine()
    machine.faults = dict(FAULTS)

    def deployment(digest, version):
        return Deployment(image=reference, digest=digest, version=version, checksum=digest[-64:])

    machine.state = HostState(name="edge-01", spec_image=reference, booted=deployment(digest, version),
                              rollback=deployment("sha256:" + "0" * 64, "0.9"),
                              staged=deployment(staged, "1.1") if staged else None)
    return machine.cmd_status(["--format=json"]).encode()


def make_token(personas, **fields):
    options = {"name": "edge batch", "uses": 1, "expires_in": timedelta(days=1), **fields}
    return reportin.enrollment_token_create(team=personas.team, user=personas.admin, **options)


class Agent:
    """A host's agent, as HTTP requests through the test client."""

    def __init__(self, credential=None, address="203.0.113.7"):
        self.client = Client(REMOTE_ADDR=address)
        self.credential = credential

    def _auth(self):
        return {"HTTP_AUTHORIZATION": f"Bearer {self.credential}"} if self.credential else {}

    def enroll(self, token, name="edge-01"):
        response = self.client.post(reverse("hosts:agent_enroll"), json.dumps({"token": token, "name": name}),
                                    content_type="application/json")
        if response.status_code == 201:
            self.credential = response.json()["credential"]
        return response

    def report(self, body):
        return self.client.post(reverse("hosts:agent_status"), body, content_type="application/json", **self._auth())

    def runtime(self, text):
        return self.client.post(reverse("hosts:agent_runtime"), text, content_type="text/plain", **self._auth())

    def next_action(self):
        return self.client.post(reverse("hosts:agent_action_next"), **self._auth())

    def log(self, action_id, text):
        return self.client.post(reverse("hosts:agent_action_log", args=[action_id]), text, content_type="text/plain",
                                **self._auth())

    def finish(self, action_id, exit_status, output="", rebooting=False):
        url = reverse("hosts:agent_action_finish", args=[action_id]) + f"?exit={exit_status}&rebooting={int(rebooting)}"
        return self.client.post(url, output, content_type="text/plain", **self._auth())


class EdgeHost:
    """A host behind NAT: its bootc state in a file, the agent's configuration and state directory, and a PATH whose
    `bootc` and `systemctl` are the simulator's."""

    def __init__(self, directory, *, reference, digest, portal_url, token):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.portal_url, self.token = portal_url, token
        self.state_file = self.directory / "bootc-state.json"
        state = SimState(name="edge-01", spec_image=reference,
                         booted=Deployment(image=reference, digest=digest, version="1.1"),
                         rollback=Deployment(image=reference, digest="sha256:" + "0" * 64, version="1.0"))
        self.state_file.write_text(state.to_json())
        bindir = self.directory / "bin"
        bindir.mkdir()
        for command in ("bootc", "systemctl", "ostree", "dnf"):
            (bindir / command).write_text(f"#!/bin/sh\nexec {sys.executable} -m hosts.simbootc_cli {command} \"$@\"\n")
            (bindir / command).chmod(0o755)
        # `sh -c <the portal's package script>` is the simulator's too (it answers with the simulated image's
        # packages, not this machine's); any other sh is the system's.
        (self.directory / "package-script").write_text(PACKAGE_SCRIPT)
        (bindir / "sh").write_text(
            f"#!/bin/sh\nif [ \"$1\" = -c ] && printf '%s' \"$2\" | cmp -s - {self.directory / 'package-script'}; then\n"
            f"  exec {sys.executable} -m hosts.simbootc_cli sh -c \"$2\"\nfi\nexec /bin/sh \"$@\"\n")
        (bindir / "sh").chmod(0o755)
        self.agent = self.directory / "portal-agent"
        self.agent.write_text(agent_dist.script())
        self.conf = self.directory / "agent.conf"
        self.conf.write_text(agent_dist.configuration(portal_url=portal_url, token=token, heartbeat_seconds=0)
                             + "HOST_NAME=edge-01\n")
        self.env = {"PATH": f"{bindir}:/usr/bin:/bin", "PORTAL_AGENT_CONF": str(self.conf),
                    "PORTAL_AGENT_STATE": str(self.directory / "var"), "SIMBOOTC_STATE": str(self.state_file),
                    "PYTHONPATH": str(REPO_ROOT), "HOME": str(self.directory)}

    def tick(self):
        """One run of the agent, as its timer starts it."""
        return subprocess.run(["/bin/sh", str(self.agent)], env=self.env, capture_output=True, text=True, timeout=120)

    def run(self, *argv):
        """Someone runs a command on the host (bootc usr-overlay, dnf install ...)."""
        return subprocess.run([sys.executable, "-m", "hosts.simbootc_cli", *argv], env=self.env, capture_output=True,
                              text=True, timeout=60, check=True)

    def edit_etc(self, path, kind="M", text=None):
        from hosts import simruntime
        from hosts.simbootc_cli import CommandLineMachine

        simruntime.edit_etc(CommandLineMachine(self.state_file), path, kind, text)

    def state(self):
        return SimState.from_json(self.state_file.read_text())
