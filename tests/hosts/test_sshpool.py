"""Kept-open SSH (portal/sshpool.py) against the simulated fleet's real SSH servers and a real OpenSSH sshd: one login
per host for any number of polls and actions, the strict host-key check on every reconnection, idle close, the bounded
pool, backoff, the per-host limit, and the same deadlines, caps and errors as a fresh connection."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hosts import actions, poller, services
from hosts.models import HostState
from portal import ssh, sshpool
from tests.helpers import require_tool
from tests.hosts.fixtures import SshdServer, booted_state

pytestmark = pytest.mark.django_db
REF = "127.0.0.1:1/platform/web-os:prod"


def target(sim, key, **kwargs):
    return ssh.Target(address="127.0.0.1", port=sim.port, host_key=sim.public_host_key(),
                      private_key_text=key.private_key, name=sim.name, **kwargs)


@pytest.fixture
def pool():
    """A pool of its own (in its own thread), with small limits the tests set through `pool.limits`."""
    made = []

    def make(**limits):
        thread = sshpool.PoolThread(sshpool.PoolLimits(**{"reconnect_base": 0.2, **limits}))
        made.append(thread)
        return thread

    yield make
    for thread in made:
        thread.stop()


class TestOneConnectionPerHost:
    def test_every_poll_and_action_reuses_one_login(self, fleet, personas):
        fleet.add("web-01", booted_state(REF))
        host = fleet.start()["web-01"]
        sim = fleet.sim("web-01")
        for _ in range(3):
            poller.poll_hosts([host.pk])
        logins = sim.logins
        action = actions.host_action_request(host=fleet.host("web-01"), kind="upgrade_check",
                                              user=personas.operator)
        actions.host_action_execute(action.pk)
        poller.poll_hosts([host.pk])
        assert sim.logins == logins  # no new login after the first poll
        assert [line.split()[1] for line in sim.commands].count("status") >= 4
        assert any(line.startswith("bootc upgrade --quiet --check") for line in sim.commands)
        assert sshpool.shared().stats()["open"] == 1

    def test_the_fresh_connection_mode_logs_in_every_time(self, fleet, settings):
        settings.HOSTS_SSH_KEEP_OPEN = False
        fleet.add("web-01", booted_state(REF))
        host = fleet.start()["web-01"]
        sim = fleet.sim("web-01")
        poller.poll_hosts([host.pk])
        logins = sim.logins
        poller.poll_hosts([host.pk])
        assert sim.logins > logins

    def test_a_real_sshd_sees_one_login_for_many_polls(self, personas, tmp_path, team_key, host_settings):
        require_tool("/usr/sbin/sshd", "ssh-keygen")
        status = tmp_path / "status.json"
        status.write_text('{"apiVersion": "org.containers.bootc/v1", "kind": "BootcHost", "status": {}}')
        server = SshdServer(tmp_path / "sshd", authorized_keys=[team_key.public_key], status_path=status)
        try:
            host = services.host_create(team=personas.team, name="real-01", address="127.0.0.1", port=server.port,
                                        actor=None, host_key=server.host_key)
            for _ in range(3):
                assert poller.poll_hosts([host.pk])["failed"] == 0
            assert server.output().count("Accepted publickey") == 1
        finally:
            sshpool.reset_shared()
            server.stop()


class TestTrustOnEveryReconnection:
    def test_a_host_that_comes_back_with_another_key_gets_nothing(self, fleet):
        """The kept-open connection ends when the host restarts; the new one meets a different key and is refused
        before anything is sent, exactly as a fresh connection would be."""
        fleet.add("web-01", booted_state(REF))
        host = fleet.start()["web-01"]
        sim = fleet.sim("web-01")
        poller.poll_hosts([host.pk])
        fleet.fleet.rotate_host_key("web-01")
        sim.commands.clear()
        logins = sim.logins
        assert poller.poll_hosts([host.pk]) == {"ok": 0, "changed": 0, "failed": 1}
        host = fleet.host("web-01")
        assert host.state == HostState.HOST_KEY_CHANGED and host.offered_host_key == sim.public_host_key()
        assert sim.commands == [] and sim.logins == logins

    def test_a_dead_kept_open_connection_is_replaced_with_a_checked_one(self, fleet, team_key, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        sim = fleet.sim("web-01")
        pooled = pool()
        t = target(sim, team_key)
        assert pooled.run(t, ssh.bootc_status()).ok
        fleet.fleet.call(sim.stop)  # the host restarts: its connections are gone
        fleet.fleet.call(sim.start)
        assert pooled.run(t, ssh.bootc_status()).ok
        assert pooled.stats()["connects"] == 2

    def test_an_unconfirmed_key_is_never_connected(self, fleet, team_key, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        t = target(fleet.sim("web-01"), team_key)
        t.host_key = None
        with pytest.raises(ssh.HostKeyUnknown):
            pool().run(t, ssh.bootc_status())


class TestBounds:
    def test_idle_connections_are_closed(self, fleet, team_key, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        pooled = pool(idle_seconds=0.2)
        assert pooled.run(target(fleet.sim("web-01"), team_key), ssh.bootc_status()).ok
        assert pooled.stats()["open"] == 1
        deadline = time.monotonic() + 5
        while pooled.stats()["open"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pooled.stats()["open"] == 0 and pooled.stats()["idle_closed"] == 1

    def test_a_full_pool_closes_the_least_recently_used_connection(self, fleet, team_key, pool):
        for name in ("web-01", "web-02", "web-03"):
            fleet.add(name, booted_state(REF))
        fleet.start(register=False)
        pooled = pool(max_connections=2)
        for name in ("web-01", "web-02", "web-03"):
            assert pooled.run(target(fleet.sim(name), team_key), ssh.bootc_status()).ok
        assert pooled.stats()["open"] == 2 and pooled.stats()["evicted"] == 1
        logins = fleet.sim("web-01").logins
        assert pooled.run(target(fleet.sim("web-01"), team_key), ssh.bootc_status()).ok  # the evicted one reconnects
        assert fleet.sim("web-01").logins > logins

    def test_commands_on_one_host_are_limited(self, fleet, team_key, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        sim = fleet.sim("web-01")
        fleet.fleet.set_fault("web-01", "slow", 0.2)
        pooled = pool(sessions_per_host=2)
        t = target(sim, team_key)
        with ThreadPoolExecutor(6) as threads:
            results = list(threads.map(lambda _: pooled.run(t, ssh.bootc_status()).ok, range(6)))
        assert results == [True] * 6 and sim.most_running == 2

    def test_reconnecting_backs_off_and_a_short_deadline_gets_the_last_error_at_once(self, fleet, team_key, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("web-01", "down")
        pooled = pool(reconnect_base=30.0)
        t = target(fleet.sim("web-01"), team_key, connect_timeout=0.5, handshake_timeout=0.5, auth_timeout=0.5)
        with pytest.raises(ssh.HostUnreachable):
            pooled.run(t, ssh.bootc_status())
        with pytest.raises(ssh.HostUnreachable):
            pooled.run(t, ssh.bootc_status())
        assert pooled.stats()["connect_failures"] == 1  # the second call did not try again within the pause


class TestSameGuaranteesAsAFreshConnection:
    def test_only_allow_listed_commands(self, fleet, team_key, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        with pytest.raises(TypeError):
            pool().run(target(fleet.sim("web-01"), team_key), "rm -rf /")

    def test_a_handshake_that_never_comes_hits_its_deadline(self, fleet, team_key, pool):
        fleet.add("hang-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("hang-01", "hang")
        t = target(fleet.sim("hang-01"), team_key, handshake_timeout=0.3, auth_timeout=0.2)
        with pytest.raises(ssh.HostUnreachable, match="did not complete the SSH handshake"):
            pool().run(t, ssh.bootc_status())

    def test_a_command_that_does_not_finish_hits_its_deadline(self, fleet, team_key, pool):
        fleet.add("slow-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("slow-01", "slow", 3.0)
        with pytest.raises(ssh.CommandTimeout, match="did not finish within 0.5 s"):
            pool().run(target(fleet.sim("slow-01"), team_key), ssh.bootc_status(), timeout=0.5)

    def test_a_commands_time_starts_once_its_connection_is_up(self, fleet, team_key, pool):
        """One handshake at a time, and the first host hangs in it for 1 s: the second host's 0.5 s command, queued
        behind that handshake, still runs (its time is the command's, not the queue's)."""
        fleet.add("hang-01", booted_state(REF))
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("hang-01", "hang")
        pooled = pool(connects_in_flight=1)
        hanging = target(fleet.sim("hang-01"), team_key, handshake_timeout=0.5, auth_timeout=0.5)
        with ThreadPoolExecutor(2) as threads:
            stuck = threads.submit(pooled.run, hanging, ssh.bootc_status())
            time.sleep(0.1)  # the hanging host holds the only handshake slot
            queued = threads.submit(pooled.run, target(fleet.sim("web-01"), team_key), ssh.bootc_status(), timeout=0.5)
            assert queued.result().ok
            with pytest.raises(ssh.HostUnreachable, match="did not complete the SSH handshake"):
                stuck.result()

    def test_an_output_flood_is_capped(self, fleet, team_key, pool):
        fleet.add("flood-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("flood-01", "flood", True)
        result = pool().run(target(fleet.sim("flood-01"), team_key), ssh.bootc_status(), max_output=64 * 1024)
        assert result.truncated and len(result.stdout) == 64 * 1024 and not result.ok

    def test_a_refused_key_says_what_to_do(self, fleet, personas, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        other = services.team_key_ensure(team=personas.other_team)
        with pytest.raises(ssh.AuthenticationFailed, match="authorized_keys"):
            pool().run(target(fleet.sim("web-01"), other), ssh.bootc_status())

    def test_output_streams_to_the_callers_thread(self, fleet, team_key, pool):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        chunks, ticks = [], []
        result = pool().run(target(fleet.sim("web-01"), team_key), ssh.bootc_status(), on_output=chunks.append,
                            on_tick=lambda: ticks.append(1))
        assert b"".join(chunks) == result.stdout and ticks
