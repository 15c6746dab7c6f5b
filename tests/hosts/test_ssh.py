"""portal/ssh.py against the simulated fleet's real SSH servers: strict host keys (the MITM test), deadlines, the output cap,
the allow-list, sudo, jump hosts, and the key helpers."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hosts import services
from hosts.simulator import Fleet
from portal import ssh
from tests.hosts.fixtures import booted_state

pytestmark = pytest.mark.django_db
REF = "127.0.0.1:1/platform/web-os:prod"


def target(sim, key, **kwargs):
    return ssh.Target(address="127.0.0.1", port=sim.port, host_key=sim.public_host_key(),
                      private_key=ssh.load_private_key(key.private_key), name=sim.name, **kwargs)


class TestStrictHostKeys:
    def test_a_changed_host_key_is_refused_before_anything_is_sent(self, fleet, team_key):
        """The MITM test: the server at the host's address now has another key. Not one command, not one login."""
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        sim = fleet.sim("web-01")
        pinned = target(sim, team_key)
        assert ssh.run(pinned, ssh.bootc_status()).ok
        fleet.fleet.rotate_host_key("web-01")
        sim.commands.clear()
        logins_before = sim.logins
        with pytest.raises(ssh.HostKeyMismatch) as refused:
            ssh.run(pinned, ssh.bootc_status())
        assert refused.value.presented_key == sim.public_host_key()
        assert "Nothing was sent" in str(refused.value)
        assert sim.commands == [] and sim.logins == logins_before

    def test_an_unknown_key_is_never_accepted(self, fleet, team_key):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        unpinned = target(fleet.sim("web-01"), team_key)
        unpinned.host_key = None
        with pytest.raises(ssh.HostKeyUnknown):
            ssh.run(unpinned, ssh.bootc_status())
        assert fleet.sim("web-01").commands == []

    def test_fetching_a_key_reads_it_without_logging_in(self, fleet, team_key):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        sim = fleet.sim("web-01")
        assert ssh.fetch_host_key("127.0.0.1", sim.port) == sim.public_host_key()
        assert sim.logins == 0 and sim.commands == []

    def test_a_key_the_server_does_not_accept_is_refused_with_advice(self, fleet, personas):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        other_key = services.team_key_ensure(team=personas.other_team)
        with pytest.raises(ssh.AuthenticationFailed, match="authorized_keys"):
            ssh.run(target(fleet.sim("web-01"), other_key), ssh.bootc_status())


class TestDeadlinesAndCaps:
    def test_a_host_that_never_speaks_ssh_hits_the_handshake_deadline(self, fleet, team_key):
        fleet.add("hang-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("hang-01", "hang")
        slow = target(fleet.sim("hang-01"), team_key, handshake_timeout=0.5)
        with pytest.raises(ssh.SSHError) as failed:
            ssh.run(slow, ssh.bootc_status())
        assert failed.value.kind in ("unreachable", "timeout")

    def test_a_command_that_does_not_finish_hits_its_deadline(self, fleet, team_key):
        fleet.add("slow-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("slow-01", "slow", 3.0)
        with pytest.raises(ssh.CommandTimeout, match="did not finish within 0.5 s"):
            ssh.run(target(fleet.sim("slow-01"), team_key), ssh.bootc_status(), timeout=0.5)

    def test_a_hanging_host_does_not_hold_up_the_others(self, fleet, team_key):
        for name in ("hang-01", "web-01", "web-02", "web-03"):
            fleet.add(name, booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("hang-01", "hang")
        targets = [target(fleet.sim(n), team_key, handshake_timeout=1.0) for n in ("hang-01", "web-01", "web-02", "web-03")]

        def poll(t):
            try:
                return ssh.run(t, ssh.bootc_status()).ok
            except ssh.SSHError as exc:
                return exc.kind

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(poll, targets))
        assert results[0] in ("unreachable", "timeout") and results[1:] == [True, True, True]

    def test_an_output_flood_is_capped(self, fleet, team_key):
        fleet.add("flood-01", booted_state(REF))
        fleet.start(register=False)
        fleet.fleet.set_fault("flood-01", "flood", True)
        result = ssh.run(target(fleet.sim("flood-01"), team_key), ssh.bootc_status(), max_output=64 * 1024)
        assert result.truncated and len(result.stdout) <= 64 * 1024 and not result.ok


class TestAllowList:
    def test_commands_are_argument_lists_from_a_fixed_set(self):
        assert ssh.bootc_status().argv == ("bootc", "status", "--format=json", "--format-version=1")
        assert ssh.bootc_upgrade(check=True).argv[-1] == "--check"
        assert ssh.bootc_upgrade(apply=True).argv[-1] == "--apply"
        assert ssh.bootc_switch("reg.example.com/a/b:prod", apply=True).argv[-2:] == ("--apply", "reg.example.com/a/b:prod")
        assert ssh.bootc_rollback(apply=True).argv == ("bootc", "rollback", "--apply")
        assert ssh.systemctl_reboot().argv == ("systemctl", "reboot")
        assert ssh.journalctl("greenboot-healthcheck.service", boot=-1).argv[-4:] == ("-b", "-1", "-n", "200")

    @pytest.mark.parametrize("image", ["--apply", "reg/a; rm -rf /", "reg/a $(id)", "", "a b", "reg/a\n", "-x"])
    def test_a_switch_target_must_be_an_image_reference(self, image):
        with pytest.raises(ValueError):
            ssh.bootc_switch(image)

    def test_check_and_apply_exclude_each_other(self):
        with pytest.raises(ValueError):
            ssh.bootc_upgrade(check=True, apply=True)

    def test_only_bootc_and_greenboot_journals_are_read(self):
        with pytest.raises(ValueError):
            ssh.journalctl("sshd.service")
        with pytest.raises(ValueError):
            ssh.journalctl("greenboot-healthcheck.service", boot=-5)

    def test_anything_else_cannot_be_run(self, fleet, team_key):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        with ssh.Connection(target(fleet.sim("web-01"), team_key)) as connection, pytest.raises(TypeError):
            connection.run("cat /etc/shadow")

    def test_sudo_is_used_when_the_user_is_not_root(self, fleet, team_key):
        fleet.add("web-01", booted_state(REF))
        fleet.start(register=False)
        sim = fleet.sim("web-01")
        result = ssh.run(target(sim, team_key, username="core"), ssh.bootc_status())
        assert result.ok
        assert sim.commands[-1] == "sudo -n -- bootc status --format=json --format-version=1"
        ssh.run(target(sim, team_key), ssh.bootc_status())
        assert sim.commands[-1] == "bootc status --format=json --format-version=1"


class TestJumpHosts:
    def test_a_host_is_reached_through_a_jump_host_with_both_keys_checked(self, fleet, team_key):
        fleet.add("bastion", booted_state(REF))
        fleet.add("inner-01", booted_state(REF))
        fleet.start(register=False)
        bastion, inner = fleet.sim("bastion"), fleet.sim("inner-01")
        through = target(inner, team_key, jump=target(bastion, team_key))
        assert ssh.run(through, ssh.bootc_status()).ok
        assert inner.commands and bastion.commands == []  # the bastion only forwarded
        wrong_bastion = target(bastion, team_key)
        wrong_bastion.host_key = inner.public_host_key()
        with pytest.raises(ssh.HostKeyMismatch):
            ssh.run(target(inner, team_key, jump=wrong_bastion), ssh.bootc_status())


class TestKeys:
    def test_a_generated_pair_is_ed25519_and_loads(self):
        private, public = ssh.generate_keypair("portal-platform")
        assert public.startswith("ssh-ed25519 ") and public.endswith(" portal-platform")
        assert ssh.load_private_key(private).get_name() == "ssh-ed25519"
        assert ssh.fingerprint(public).startswith("SHA256:")

    def test_public_keys_are_read_from_every_usual_form(self):
        _, public = ssh.generate_keypair("c")
        line = " ".join(public.split()[:2])
        assert ssh.parse_public_key(public) == line
        assert ssh.parse_public_key(f"[host]:2222 {line}") == line  # known_hosts
        assert ssh.parse_public_key(f"# comment\nhost {line} extra") == line  # ssh-keyscan
        for bad in ("", "ssh-ed25519 notbase64!", "hello", "ssh-ed25519 AAAA"):
            with pytest.raises(ValueError):
                ssh.parse_public_key(bad)

    def test_a_key_labelled_with_the_wrong_type_is_refused(self):
        _, public = ssh.generate_keypair("c")
        blob = public.split()[1]
        assert ssh.parse_public_key(f"ecdsa-sha2-nistp256 {blob}") == f"ssh-ed25519 {blob}"


def test_the_simulator_serves_many_hosts_in_one_loop(team_key):
    fleet = Fleet(authorized_keys=[team_key.public_key])
    for i in range(30):
        fleet.load_or_create(f"h{i}", make_state=booted_state(REF))
    fleet.start_in_thread()
    try:
        ports = {sim.port for sim in fleet.hosts.values()}
        keys = {sim.public_host_key() for sim in fleet.hosts.values()}
        assert len(ports) == 30 and len(keys) == 30  # own port, own key
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda s: ssh.run(target(s, team_key), ssh.bootc_status()).ok, fleet.hosts.values()))
        assert all(results), time.monotonic() - started
    finally:
        fleet.stop_thread()


def test_hosts_ssh_is_the_only_module_that_uses_paramiko():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    users = sorted(str(path.relative_to(root)) for app in ("portal", "builds", "hosts") for path in (root / app).rglob("*.py")
                   if re.search(r"^\s*(import paramiko|from paramiko)", path.read_text(), re.MULTILINE))
    assert users == ["portal/ssh.py"]
