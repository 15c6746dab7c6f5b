"""The SSH client and the poller against a real OpenSSH sshd serving a scripted `bootc` (no simulator in between)."""

import pytest

from hosts import poller
from hosts.models import HostEvent, HostState
from hosts.services import host_create
from portal import ssh
from tests.helpers import CORPUS, require_tool
from tests.hosts.fixtures import SshdServer

pytestmark = pytest.mark.django_db
STATUS = CORPUS / "status-22-insights-booted-rollback.json"


@pytest.fixture
def sshd(tmp_path, team_key):
    require_tool("/usr/sbin/sshd", "ssh-keygen")
    server = SshdServer(tmp_path / "sshd", authorized_keys=[team_key.public_key], status_path=STATUS)
    yield server
    server.stop()


def test_the_poller_reads_a_real_sshd_with_a_scripted_bootc(personas, sshd, host_settings):
    host = host_create(team=personas.team, name="real-01", address="127.0.0.1", port=sshd.port, actor=None,
                       host_key=sshd.host_key)
    assert poller.poll_hosts([host.pk]) == {"ok": 0, "changed": 1, "failed": 0}
    host.refresh_from_db()
    assert host.state == HostState.RUNNING and host.is_bootc
    assert host.booted_digest.startswith("sha256:806d7739") and host.booted_version == "stream9.20231213.0"
    assert host.rollback_digest.startswith("sha256:92e47643")
    assert host.raw_status == STATUS.read_text()
    assert HostEvent.objects.filter(host=host, kind="first_seen").count() == 1
    assert "Accepted publickey for root" in sshd.output()


def test_a_real_sshd_with_another_key_gets_no_login_and_no_command(personas, sshd, team_key, host_settings):
    """The MITM test against OpenSSH: we expect another key than sshd has, so we refuse before authenticating."""
    _, other = ssh.generate_keypair("someone-else")
    host = host_create(team=personas.team, name="real-02", address="127.0.0.1", port=sshd.port, actor=None,
                       host_key=other)
    assert poller.poll_hosts([host.pk])["failed"] == 1
    host.refresh_from_db()
    assert host.state == HostState.HOST_KEY_CHANGED
    assert host.offered_host_key == sshd.host_key
    assert "Accepted" not in sshd.output()


def test_only_allow_listed_commands_reach_the_scripted_bootc(sshd, team_key, host_settings):
    target = ssh.Target(address="127.0.0.1", port=sshd.port, host_key=sshd.host_key,
                        private_key=ssh.load_private_key(team_key.private_key))
    with ssh.Connection(target) as connection:
        assert connection.run(ssh.bootc_status()).stdout == STATUS.read_bytes()
        refused = connection.run(ssh.bootc_upgrade(check=True))
        assert refused.exit_status == 1 and "only answers status" in refused.error_text()
