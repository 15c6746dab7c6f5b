"""Logging in to a boot test's VM over SSH, and the checks run there once it booted (docs/boot-tests.md).

What the portal puts into the VM, as an installer's configuration would (bootc-image-builder's `[[customizations.user]]
key`, a kickstart's `sshkey`): a key pair made for this run (the public half in root's `authorized_keys`; the private
half lives only in the worker's memory and dies with the run), the VM's SSH host key (made for the run too, so the
connection is pinned as strictly as any host's: `portal.ssh` has no "accept any key" mode), and the deployment record
an install writes: which image reference and manifest digest this root file system was made from (an ostree origin
file, `DEPLOYMENT_RECORD`). The digest in it is the sha256 of the manifest the worker copied out of the registry, not
the row's: a registry that served something else shows up as a mismatch.

The VM's sshd is reached through QEMU's user-mode `hostfwd` on loopback only (127.0.0.1:<free port> to the guest's
port 22); nothing else is forwarded and `restrict=on` keeps the guest from reaching out.

The checks, each with the run's check deadline (`BOOT_TEST_CHECK_SECONDS`), retried until it while the answer may
still change (sshd not yet listening, systemd still starting):
- `bootc status --format=json --format-version=1`: `status.booted.image.imageDigest` is the digest under test;
- `systemctl is-system-running`: `running` (`degraded` fails at once; `starting` is asked again);
- the definition's own script (`sh -c`), when it has one: exit 0.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field

from portal import ssh

DEPLOYMENT_RECORD = "ostree/deploy/default/deploy/portal-boottest.origin"
GUEST_PORT = 22
RETRY_SECONDS = 2.0
COMMAND_SECONDS = 60.0
OUTPUT_LINES = 8  # of a failing script's output, for the verdict


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 now, for QEMU's hostfwd (QEMU says so, and the boot fails, if it is taken by then)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class GuestAccess:
    """The run's keys and forwarded port."""

    port: int
    client_private: str
    client_public: str
    host_private: str
    host_public: str

    @classmethod
    def make(cls, run_id: int) -> GuestAccess:
        client_private, client_public = ssh.generate_keypair(f"portal-boottest-{run_id}")
        host_private, host_public = ssh.generate_keypair(f"portal-boottest-{run_id}-vm")
        return cls(port=free_loopback_port(), client_private=client_private, client_public=client_public,
                   host_private=host_private, host_public=host_public)

    def hostfwd(self) -> str:
        return f"tcp:127.0.0.1:{self.port}-:{GUEST_PORT}"

    def guest_files(self, *, image_reference: str, digest: str) -> dict[str, tuple[int, bytes]]:
        origin = (f"[origin]\ncontainer-image-reference=ostree-unverified-registry:{image_reference}\n\n"
                  f"[portal]\nmanifest-digest={digest}\n")
        return {
            "root/.ssh/authorized_keys": (0o600, (self.client_public + "\n").encode()),
            "etc/ssh/ssh_host_ed25519_key": (0o600, self.host_private.encode()),
            "etc/ssh/ssh_host_ed25519_key.pub": (0o644, (self.host_public + "\n").encode()),
            DEPLOYMENT_RECORD: (0o644, origin.encode()),
        }

    def target(self, *, timeout: float) -> ssh.Target:
        return ssh.Target(address="127.0.0.1", port=self.port, username="root",
                          host_key=ssh.parse_public_key(self.host_public),
                          private_key=ssh.load_private_key(self.client_private), name=f"the VM (127.0.0.1:{self.port})",
                          connect_timeout=min(5.0, timeout), handshake_timeout=min(30.0, timeout),
                          auth_timeout=min(30.0, timeout))


@dataclass
class CheckResult:
    passed: bool
    reason: str = ""
    results: list[dict] = field(default_factory=list)  # {round, name, passed, detail}


def run_checks(access: GuestAccess, *, digest: str, script: str, seconds: float, round_number: int, log) -> CheckResult:
    """Log in and run the checks, within `seconds`. `log(line)` says what happens (it goes to the run's log)."""
    deadline = time.monotonic() + seconds
    outcome = CheckResult(passed=True)

    def record(name, passed, detail):
        outcome.results.append({"round": round_number, "name": name, "passed": passed, "detail": detail[:500]})
        log(f"boot test: {'passed' if passed else 'FAILED'}: {name}: {detail}")
        return passed

    connection, why_not = _connect(access, deadline, log)
    if connection is None:
        record("log in over SSH", False, why_not)
        outcome.passed, outcome.reason = False, (f"The VM could not be logged in to over SSH within {seconds:g} s "
                                                 f"(BOOT_TEST_CHECK_SECONDS): {why_not}")
        return outcome
    try:
        record("log in over SSH", True, "as root with the run's key, the VM's host key pinned "
                                        f"({ssh.fingerprint(ssh.parse_public_key(access.host_public))})")
        outcome.reason = _first_failure(connection, digest=digest, script=script, deadline=deadline, record=record)
    finally:
        connection.close()
    outcome.passed = not outcome.reason
    return outcome


def _first_failure(connection, *, digest, script, deadline, record) -> str:
    try:
        booted = _bootc_digest(connection, deadline)
    except ssh.SSHError as exc:
        booted = f"({exc})"
    said = f"booted {booted}, the digest under test" if booted == digest else f"booted {booted}, expected {digest}"
    if not record("bootc status reports the digest", booted == digest, said):
        return f"bootc status in the VM reports {booted} booted, not {digest}."
    state = _system_state(connection, deadline)
    if not record("systemctl is-system-running", state == "running", state):
        return f"systemctl is-system-running in the VM says {state}, not running."
    if script.strip():
        code, output = _script(connection, script, deadline)
        if not record("the definition's test script", code == 0, f"exit {code}" + (f"; {output[-1]}" if output else "")):
            said = " / ".join(output[-OUTPUT_LINES:])
            return f"The definition's test script exited {code} in the VM" + (f": {said}" if said else "") + "."
    return ""


def _connect(access, deadline, log):
    """An open connection, retried until the deadline (sshd may start after the marker); or (None, why not)."""
    last = "nothing answered"
    tries = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, last
        tries += 1
        try:
            return ssh.Connection(access.target(timeout=left)).open(), ""
        except (ssh.HostKeyMismatch, ssh.AuthenticationFailed) as exc:
            return None, str(exc)  # another answer will not come
        except ssh.SSHError as exc:
            last = str(exc)
            if tries == 1:
                log(f"boot test: SSH not answering yet ({last}); trying again until the check deadline")
        time.sleep(min(RETRY_SECONDS, max(deadline - time.monotonic(), 0)))


def _run(connection, command, deadline):
    return connection.run(command, timeout=max(min(COMMAND_SECONDS, deadline - time.monotonic()), 1.0))


def _bootc_digest(connection, deadline) -> str:
    result = _run(connection, ssh.bootc_status(), deadline)
    if not result.ok:
        return f"(bootc status exited {result.exit_status}: {result.error_text()[:200]})"
    try:
        document = json.loads(result.text())
        return ((((document.get("status") or {}).get("booted") or {}).get("image") or {}).get("imageDigest")
                or "(no booted image)")
    except (ValueError, AttributeError):
        return "(bootc status printed no JSON document)"


def _system_state(connection, deadline) -> str:
    """`running`, `degraded`, ...: asked again while systemd says it is still starting."""
    while True:
        try:
            result = _run(connection, ssh.systemctl_is_system_running(), deadline)
        except ssh.SSHError as exc:
            return f"unknown ({exc})"
        state = result.text().strip() or f"unknown (exit {result.exit_status}: {result.error_text()[:200]})"
        if state not in ("starting", "initializing") or time.monotonic() + RETRY_SECONDS >= deadline:
            return state
        time.sleep(RETRY_SECONDS)


def _script(connection, script, deadline):
    try:
        result = _run(connection, ssh.boot_test_script(script), deadline)
    except ssh.SSHError as exc:
        return "none", [str(exc)]
    output = [line for line in (result.text() + "\n" + result.error_text()).splitlines() if line.strip()]
    return result.exit_status, output
