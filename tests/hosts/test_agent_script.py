"""The agent script itself (`hosts/agent/portal-agent.sh`, as the portal hands it out), run with sh and curl against
a real portal (daphne on loopback, the test database, the suite's Redis), with a `bootc` on PATH that follows the
simulator's state machine (`hosts.simbootc_cli`) and resolves images in the test registry. Each run of the script is
one tick of its systemd timer."""

import subprocess
from datetime import timedelta

import pytest

from hosts import agent_dist, reportin
from hosts.actions import host_action_request
from hosts.models import ActionKind, EventKind, Host, HostSnapshot, HostState
from portal.logsink import lines_after
from portal.models import RunStatus
from tests.hosts.reportin_fixtures import EdgeHost

pytestmark = pytest.mark.django_db(transaction=True)

@pytest.fixture
def edge(tmp_path, portal_server, demo_images, personas):
    digests, base = demo_images
    _, secret = reportin.enrollment_token_create(team=personas.team, user=personas.admin, name="edge batch",
                                                 expires_in=timedelta(hours=1))
    host = EdgeHost(tmp_path, reference=f"{base}:dev", digest=digests["1.1"]["amd64"], portal_url=portal_server.url,
                    token=secret)
    host.digests = digests
    return host


def test_the_agent_enrolls_waits_for_approval_reports_and_carries_out_an_upgrade(edge, personas):
    first = edge.tick()
    assert "enrolled as edge-01; waiting for an admin to approve it" in first.stderr
    assert "status refused (403)" in first.stderr and "approval" in first.stderr
    host = Host.objects.get(team=personas.team, name="edge-01")
    assert host.pending_approval
    assert (edge.directory / "var" / "auth").stat().st_mode & 0o077 == 0  # the credential is for root only

    reportin.host_approve(host=host, user=personas.admin)
    second = edge.tick()
    assert second.returncode == 0, second.stderr
    host.refresh_from_db()
    assert host.booted_digest == edge.digests["1.1"]["amd64"] and host.state != HostState.UNREADABLE
    assert host.events.filter(kind=EventKind.FIRST_SEEN).exists()

    assert edge.tick().returncode == 0  # the heartbeat: the same status, no new snapshot
    assert HostSnapshot.objects.filter(host=host).count() == 1

    action = host_action_request(host=host, kind=ActionKind.UPGRADE_APPLY, user=personas.operator)
    third = edge.tick()
    assert third.returncode == 0, third.stderr
    assert "action" in third.stderr and "rebooting" in third.stderr
    action.refresh_from_db()
    assert action.run.status == RunStatus.SUCCEEDED and not action.active
    log = [text for _, text in lines_after(action.run)]
    assert any("Queued for next boot" in line for line in log), log
    assert edge.state().booted.digest == edge.digests["1.2"]["amd64"]  # the simulated host rebooted into 1.2

    fourth = edge.tick()  # the first tick after the reboot reports the new deployment
    assert fourth.returncode == 0, fourth.stderr
    host.refresh_from_db()
    assert host.booted_digest == edge.digests["1.2"]["amd64"]
    booted = host.events.get(kind=EventKind.BOOTED)
    assert booted.action == action and booted.user == personas.operator


def test_the_agent_sends_what_changed_at_runtime_on_its_slower_schedule(edge, personas):
    """Someone opens a /usr overlay, installs htop and edits two files; the agent's next tick posts config-diff and the
    package list (the portal's own package script, run by the agent), which land as an SSH reading would; the tick
    after, within RUNTIME_SECONDS, sends the status and not the runtime again."""
    from builds.models import Build
    from hosts.models import HostRuntime
    from hosts.simruntime import IMAGE_PACKAGES
    from tests.diskimages.rows import succeeded_build

    build = succeeded_build(personas.team, personas.developer, digest=edge.digests["1.1"]["amd64"])
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    assert edge.tick().returncode == 1  # enrolled; waits for an admin's approval
    host = Host.objects.get(team=personas.team, name="edge-01")
    reportin.host_approve(host=host, user=personas.admin)
    edge.run("bootc", "usr-overlay")
    edge.run("dnf", "install", "-y", "htop")
    edge.edit_etc("chrony.conf", "M")
    edge.edit_etc("sysctl.d/90-tuning.conf", "A")

    ticked = edge.tick()
    assert ticked.returncode == 0, ticked.stderr
    found = HostRuntime.objects.get(host=host)
    assert found.error == "" and found.image_packages_known
    assert found.packages_added == {"htop": "1.0-1.fc42"} and not found.packages_removed
    assert found.etc_changes == [["M", "/etc/chrony.conf"], ["A", "/etc/sysctl.d/90-tuning.conf"]]
    assert found.usr_overlay  # from the status the same tick posted
    assert host.events.filter(kind=EventKind.RUNTIME_CHANGED).count() == 1

    edge.edit_etc("motd", "D")
    assert edge.tick().returncode == 0
    assert HostRuntime.objects.get(host=host).etc_total == 2  # not sent again within the hour


def test_a_used_token_is_refused_and_the_agent_says_why(edge, personas):
    assert edge.tick().returncode in (0, 1)
    again = EdgeHost(edge.directory / "second", reference="registry.example.com/x:prod", digest="sha256:" + "1" * 64,
                     portal_url=edge.portal_url, token=edge.token)
    refused = again.tick()
    assert refused.returncode == 1 and "enrollment refused (403): The enrollment token was already used." in \
        refused.stderr


def test_the_portal_hands_out_the_agent_as_a_containerfile_snippet_and_a_kickstart_post():
    from pykickstart.parser import KickstartParser
    from pykickstart.version import makeVersion

    snippet = agent_dist.containerfile_snippet(portal_url="https://portal.example.com", token="ime_abc")
    assert snippet.startswith("# Image Mode Portal agent") and "systemctl enable portal-agent.timer" in snippet
    assert "ime_abc" not in snippet  # inside base64, with the rest of the configuration
    post = agent_dist.kickstart_post(portal_url="https://portal.example.com", token="ime_abc")
    parser = KickstartParser(makeVersion())
    parser.readKickstartFromString("text\n" + post)
    script = parser.handler.scripts[0]
    assert "ENROLLMENT_TOKEN=ime_abc" in script.script and "portal-agent.timer" in script.script


def test_the_containerfile_snippet_installs_the_files_byte_for_byte(tmp_path):
    """Run the snippet's RUN line with the files' paths moved under a scratch root: what lands is what the portal
    holds."""
    snippet = agent_dist.containerfile_snippet(portal_url="https://portal.example.com", token="ime_abc")
    command = snippet.split("RUN ", 1)[1].replace("\\\n", "").replace(" /usr/", f" {tmp_path}/usr/").replace(
        " /etc/", f" {tmp_path}/etc/").replace("systemctl enable portal-agent.timer", "true")
    subprocess.run(["sh", "-c", command], check=True)
    assert (tmp_path / "usr/libexec/portal-agent/portal-agent").read_text() == agent_dist.script()
    assert (tmp_path / "etc/portal-agent/agent.conf").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("shell", ["dash", "busybox"])
def test_the_agent_posts_an_actions_output_in_whole_lines(tmp_path, shell):
    """The agent's own send_log, with `request` keeping each post: while the command runs, a line still being written
    waits for its end; once the command ended, the rest goes too."""
    source = agent_dist.script()
    start = source.index("send_log() {")
    function = source[start:source.index("\n}\n", start) + 3]
    script = f"""STATE={tmp_path}
request() {{ cat "$STATE/action.chunk" >> "$STATE/posts"; echo '|' >> "$STATE/posts"; }}
{function}
printf 'one\\ntw' > "$STATE/action.out"
sent=$(send_log 7 0); echo "$sent"
sent=$(send_log 7 "$sent"); echo "$sent"
printf 'o\\nthree\\n' >> "$STATE/action.out"
sent=$(send_log 7 "$sent"); echo "$sent"
printf 'last, no newline' >> "$STATE/action.out"
sent=$(send_log 7 "$sent" final); echo "$sent"
"""
    command = ["busybox", "sh", "-c", script] if shell == "busybox" else ["dash", "-c", script]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["4", "4", "14", "30"]
    assert (tmp_path / "posts").read_text().split("|\n") == ["one\n", "two\nthree\n", "last, no newline", ""]
