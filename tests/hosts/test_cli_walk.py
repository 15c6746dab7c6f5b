"""The walk a pipeline takes, with the command line client only, against a running portal: a real daphne, a real
Celery worker (builds with podman into the session's registry, promotions copied with skopeo, host actions over SSH),
and a simulated bootc host tracking the stage's tag.

A developer's token builds a new revision and waits for it with the log streamed over the websocket, then asks for
the digest to go to test; an approver's token approves it (and waits until it is applied); an operator's token has
the host upgrade and reboot, and the host boots the digest. Every step is an `imp` process whose exit code is checked,
as a CI job would check it."""

import json
import os
import subprocess
import sys

import pytest

from builds import services as builds
from builds.models import Build, RegistryCredential
from builds.queues import local_queues
from builds.releases.models import Promotion
from tests.builds.fixtures import BASE_IMAGE, WORKER_ENV
from tests.helpers import ROOT
from tests.hosts.fixtures import booted_state

pytestmark = [pytest.mark.slow, pytest.mark.processes]

CONTAINERFILE = f"""FROM {BASE_IMAGE}
RUN echo "walking the pipeline" > /etc/walk
LABEL containers.bootc=1 org.opencontainers.image.version="2.0"
"""


class Imp:
    """Runs `imp` as a CI job would: a process of its own, URL and token from the environment. Each call goes to a
    transcript (test-artifacts/cli-walk-<test>.txt) with its exit code, for people to read."""

    def __init__(self, url, home, transcript):
        self.url, self.home, self.transcript = url, home, transcript
        transcript.parent.mkdir(parents=True, exist_ok=True)
        transcript.write_text(f"# imp against {url}\n")

    def __call__(self, token, *argv, timeout=240):
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMP_")}
        env.update(IMP_URL=self.url, IMP_TOKEN=token, HOME=str(self.home))
        done = subprocess.run([sys.executable, "-m", "portal.cli", *argv], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        with self.transcript.open("a") as log:
            log.write(f"\n$ imp {' '.join(argv)}\n{done.stdout}{done.stderr}(exit {done.returncode})\n")
        return done.returncode, done.stdout, done.stderr


@pytest.fixture
def walk(personas, oci_registry, local_builder, build_settings, fleet, portal_server, start_worker, make_token,
         tmp_path, request):
    """The portal as a pipeline finds it: a definition with no revision yet, a test stage that takes one approval, a
    simulated host tracking the test tag, a worker, and a token for each person of the walk."""
    # The worker is its own process: the registry's plain HTTP comes from the team's login row, not from this
    # process's settings (which another test's settings fixture may have put back).
    RegistryCredential.objects.get_or_create(team=personas.team, registry=oci_registry.address,
                                             defaults={"insecure": True})
    definition = builds.definition_create(team=personas.team, user=personas.developer, name="walk-os",
                                          repository=f"{oci_registry.address}/platform/walk-os")
    personas.team.stages.filter(name="test").update(required_approvals=1, require_previous_stage=False)
    reference = f"{definition.repository}:test"
    fleet.add("web-01", booted_state(reference, "sha256:" + "a" * 64, "1.0"))
    fleet.start()
    start_worker(queues=",".join([*local_queues(), "hosts", "default"]), concurrency=2, **WORKER_ENV)
    return {
        "imp": Imp(portal_server.url, tmp_path, ROOT / "test-artifacts" / f"cli-walk-{request.node.name[5:40]}.txt"),
        "developer": make_token(personas.developer, "read", "build", "promote"),
        "approver": make_token(personas.approver2, "read", "approve"),
        "operator": make_token(personas.operator, "read", "operate"),
        "definition": definition,
        "server": portal_server,
    }


def test_a_pipeline_walks_a_revision_to_a_host_with_the_cli_only_and_a_failing_build_or_refused_token_exits_non_zero(
        walk, tmp_path, personas):
    """One test on one set-up (a worker process, a simulated host: some 5 s to start): the walk, then what a CI job sees
    when a build fails or a token is refused."""
    a_pipeline_walks_a_revision_to_a_host_with_the_cli_only(walk, tmp_path, personas)
    a_failing_build_exits_1_with_its_log_and_a_refused_token_exits_3(walk, tmp_path, personas)


def a_pipeline_walks_a_revision_to_a_host_with_the_cli_only(walk, tmp_path, personas):
    imp = walk["imp"]
    (tmp_path / "Containerfile").write_text(CONTAINERFILE)

    # 1. Build a new revision and wait for it, its log streamed over the websocket (to stderr with --json).
    code, out, err = imp(walk["developer"], "--json", "build", f"{personas.team.slug}/walk-os",
                         "--containerfile", str(tmp_path / "Containerfile"), "--message", "walk", "--wait", "--follow")
    assert code == 0, err
    build = json.loads(out)
    assert build["status"] == "succeeded" and build["digest"].startswith("sha256:")
    assert 'RUN echo "walking the pipeline"' in err  # the build's log, as it streamed
    assert Build.objects.get(pk=build["id"]).revision.message == "walk"

    # 2. Ask for the digest to go to test.
    code, out, err = imp(walk["developer"], "--json", "promote", f"{personas.team.slug}/walk-os", "--build",
                         str(build["id"]), "--to", "test", "--reason", "the walk")
    assert code == 0, err
    promotion = json.loads(out)
    assert (promotion["status"], promotion["digest"], promotion["requested_by"]) == ("pending", build["digest"],
                                                                                    "developer")

    # The requester may not approve it; the developer's token has no approve scope anyway.
    code, _, err = imp(walk["developer"], "approve", str(promotion["id"]))
    assert code == 3, err

    # 3. Another person approves it, and waits until the stage holds it.
    code, out, err = imp(walk["approver"], "--json", "approve", str(promotion["id"]), "--comment", "ok", "--wait",
                         "--timeout", "120", "--interval", "0.5")
    assert code == 0, err
    assert json.loads(out)["status"] == "applied"
    assert Promotion.objects.get(pk=promotion["id"]).approvals.get().approver == personas.approver2

    # The event says so too.
    code, out, err = imp(walk["developer"], "--json", "watch", "--recent", "--type", "promotion.applied", "--count", "1",
                         "--timeout", "30")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["subject"]["id"] == promotion["id"]

    # 4. The host picks it up: the operator upgrades and reboots it, following the action's log.
    code, out, err = imp(walk["operator"], "host", "upgrade", "web-01", "--apply", "--follow", "--timeout", "180")
    assert code == 0, out + err
    assert "bootc upgrade" in out

    code, out, err = imp(walk["operator"], "--json", "host", "status", "web-01", "--wait-for", build["digest"],
                         "--timeout", "60", "--interval", "0.5")
    assert code == 0, err
    host = json.loads(out)
    assert (host["booted_digest"], host["booted_version"]) == (build["digest"], "2.0")

    # The token never reached the server's log (it travels in a header, not in a URL).
    assert walk["operator"] not in walk["server"].output()


def a_failing_build_exits_1_with_its_log_and_a_refused_token_exits_3(walk, tmp_path, personas):
    imp = walk["imp"]
    (tmp_path / "Containerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo about to fail && false\n")
    code, out, err = imp(walk["developer"], "build", f"{personas.team.slug}/walk-os", "--containerfile",
                         str(tmp_path / "Containerfile"), "--follow")
    assert code == 1, out + err
    assert "about to fail" in out and "failed" in out

    code, _, err = imp("impt_not-a-token", "build", f"{personas.team.slug}/walk-os")
    assert code == 3 and "token" in err.lower()
    code, _, err = imp(walk["operator"], "promote", f"{personas.team.slug}/walk-os", "--build", "1", "--to", "test",
                       "--reason", "no scope")
    assert code == 3 and "promote" in err
    code, _, err = imp(walk["developer"], "builds", "show", "999999")
    assert code == 4, err
