"""What the report-in tests share: bootc status documents made by the simulator's own state machine, and an agent
talking to the portal through Django's test client."""

import json
from datetime import timedelta

from django.test import Client
from django.urls import reverse

from hosts import reportin
from hosts.simbootc import FAULTS, BootcMachine, Deployment, HostState

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

    def next_action(self):
        return self.client.post(reverse("hosts:agent_action_next"), **self._auth())

    def log(self, action_id, text):
        return self.client.post(reverse("hosts:agent_action_log", args=[action_id]), text, content_type="text/plain",
                                **self._auth())

    def finish(self, action_id, exit_status, output="", rebooting=False):
        url = reverse("hosts:agent_action_finish", args=[action_id]) + f"?exit={exit_status}&rebooting={int(rebooting)}"
        return self.client.post(url, output, content_type="text/plain", **self._auth())
