"""SSH to hosts: the only module that uses paramiko (imported by the functions that connect, not at start-up).

What it guarantees:
- **Strict host keys.** A connection checks the key the server presents against the key pinned for the host *before*
  authenticating, so a server with another key (a man in the middle, a reinstalled host) learns nothing and is sent no
  command. There is no "accept unknown key" mode: `fetch_host_key` reads a key for a person to confirm.
- **Deadlines** on connecting, the SSH handshake, authentication and each command, and a cap on output size.
- **A fixed allow-list of commands**, built as argument lists by the functions below (`bootc_status()`, ...). `run()`
  accepts only `Command` objects made here; each argument is quoted for the remote shell by `shlex.join`, never
  interpolated into a string. `sudo -n` is prepended when the user is not root.
- **Jump hosts**: the target is reached through a `direct-tcpip` channel of an SSH connection to the jump host, which
  is held to the same strict checks.

Errors are the portal's own (`SSHError` and subclasses), each with a `kind` the poller records and a message a person
understands.
"""

import base64
import hashlib
import io
import logging
import re
import shlex
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from portal import etcfiles, packages
from portal.text import decoded

if TYPE_CHECKING:
    import paramiko

# paramiko logs every failed connection with a traceback at ERROR; the poller records each failure on the host instead.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)

# Deadlines (seconds) and limits; overridable per call.
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
AUTH_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0
MAX_OUTPUT_BYTES = 1024 * 1024

# curve25519 first: as safe as the post-quantum hybrid for our threat model today, and a fraction of its CPU per
# connection, which is what polling a thousand hosts a minute costs (docs/hosts.md, bench/fleet).
KEX_ORDER = ("curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "mlkem768x25519-sha256",
             "diffie-hellman-group16-sha512", "diffie-hellman-group14-sha256")
CIPHER_ORDER = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                  "rsa-sha2-512", "rsa-sha2-256")


class SSHError(Exception):
    """Something went wrong talking to a host. `kind` is short and stable, for the poller and the UI."""

    kind = "error"


class HostUnreachable(SSHError):
    kind = "unreachable"


class HostKeyUnknown(SSHError):
    kind = "host_key_unknown"


class HostKeyMismatch(SSHError):
    """The server presented a key other than the pinned one. Nothing was sent to it."""

    kind = "host_key_changed"

    def __init__(self, message, *, presented_key):
        super().__init__(message)
        self.presented_key = presented_key


class AuthenticationFailed(SSHError):
    kind = "auth_failed"


class CommandTimeout(SSHError):
    kind = "timeout"


class ProtocolError(SSHError):
    kind = "protocol"


# --- Keys ------------------------------------------------------------------------------------------------------------


def generate_keypair(comment):
    """A new ed25519 key pair: (private key in OpenSSH PEM form, `ssh-ed25519 AAAA... comment` public line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}".strip()


def load_private_key(text):
    """A paramiko key object from OpenSSH PEM text (ed25519, ecdsa or rsa)."""
    import paramiko  # heavy: loaded where a connection is made (see Connection.open)

    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise SSHError("The team's private key cannot be read.")


_KEY_LINE = re.compile(r"^\s*(?:\S+\s+)?(?P<type>ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa|rsa-sha2-(?:256|512))"
                       r"\s+(?P<blob>[A-Za-z0-9+/]+={0,3})(?:\s.*)?$")


def parse_public_key(text):
    """`type base64` from a public key line, a known_hosts line (`host type base64`) or `ssh-keyscan` output.

    Raises ValueError with a readable message. The type is taken from inside the blob, so a mislabelled line is caught.
    """
    text = (text or "").strip()
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        try:
            blob = base64.b64decode(match["blob"], validate=True)
        except ValueError:
            raise ValueError("The key is not valid base64.") from None
        inner_type = _blob_type(blob)
        if inner_type is None:
            raise ValueError("The key data is damaged.")
        return f"{inner_type} {base64.b64encode(blob).decode()}"
    raise ValueError("Paste a public host key such as `ssh-ed25519 AAAA...` (a known_hosts or ssh-keyscan line works too).")


def _blob_type(blob):
    if len(blob) < 4:
        return None
    length = int.from_bytes(blob[:4], "big")
    if length > 64 or len(blob) < 4 + length:
        return None
    try:
        return blob[4:4 + length].decode("ascii")
    except UnicodeDecodeError:
        return None


def key_type(key_line):
    return key_line.split()[0] if key_line else ""


def fingerprint(key_line):
    """OpenSSH's SHA256 fingerprint of a `type base64` key line."""
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _key_line(pkey):
    return f"{pkey.get_name()} {pkey.get_base64()}"


def _same_key(pkey, pinned):
    """Whether a server key object is the pinned `type base64` line (rsa-sha2-* and ssh-rsa name one key type)."""
    return pkey.get_base64() == pinned.split()[1]


# --- Commands (the allow-list) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """An allow-listed command as an argument list. Made only by the functions below."""

    argv: tuple
    description: str

    def for_user(self, username):
        argv = self.argv if username == "root" else ("sudo", "-n", "--", *self.argv)
        return shlex.join(argv)


_IMAGE_REFERENCE = re.compile(
    r"^(?![-])[A-Za-z0-9][A-Za-z0-9._\-/:]*(?:@sha256:[0-9a-f]{64})?$"
)
JOURNAL_UNITS = (
    "bootc-fetch-apply-updates.service", "ostree-finalize-staged.service", "ostree-boot-complete.service",
    "greenboot-healthcheck.service", "greenboot-set-rollback-trigger.service", "greenboot-grub2-set-counter.service",
    "greenboot-grub2-set-success.service", "greenboot-rpm-ostree-grub2-check-fallback.service", "greenboot-status.service",
    "redboot-auto-reboot.service",
)


def valid_image_reference(reference):
    return bool(reference) and len(reference) <= 512 and bool(_IMAGE_REFERENCE.fullmatch(reference))


def bootc_status():
    return Command(("bootc", "status", "--format=json", "--format-version=1"), "read the bootc status")


def bootc_status_without_format_version():
    """For a bootc older than --format-version (it refuses the option): JSON in the one version it prints."""
    return Command(("bootc", "status", "--format=json"), "read the bootc status (a bootc without --format-version)")


SOFT_REBOOT_MODES = ("", "auto", "required")


def bootc_upgrade(*, check=False, apply=False, download_only=False, from_downloaded=False, soft_reboot=""):
    """`bootc upgrade`: `--check` (metadata only), `--download-only` (stage locked: a reboot does not apply it; bootc
    1.12), `--from-downloaded` (unlock what was downloaded, without the registry; 1.12), `--apply` (reboot into it),
    `--soft-reboot=auto|required` with `--apply` (1.7)."""
    if check and (apply or download_only or from_downloaded):
        raise ValueError("bootc upgrade --check excludes --apply, --download-only and --from-downloaded.")
    if download_only and (apply or from_downloaded):
        raise ValueError("bootc upgrade --download-only excludes --apply and --from-downloaded.")
    if soft_reboot not in SOFT_REBOOT_MODES or (soft_reboot and not apply):
        raise ValueError("--soft-reboot is auto or required, and only with --apply.")
    argv = ("bootc", "upgrade", "--quiet") + (("--check",) if check else ()) + (
        ("--download-only",) if download_only else ()) + (("--from-downloaded",) if from_downloaded else ()) + (
        ("--apply",) if apply else ()) + ((f"--soft-reboot={soft_reboot}",) if soft_reboot else ())
    if check:
        what = "check for an update"
    elif download_only:
        what = "download the update (staged, locked until applied)"
    elif from_downloaded:
        what = "apply the downloaded update" + (" and reboot into it" if apply else "")
    else:
        what = "stage the update and reboot into it" if apply else "stage the update"
    return Command(argv, what + (f" (soft reboot: {soft_reboot})" if soft_reboot else ""))


def bootc_switch(image, *, apply=False, download_only=False, soft_reboot="", enforce_signatures=False):
    """`bootc switch`; with `enforce_signatures`, --enforce-container-sigpolicy: bootc pulls under the host's
    policy.json and refuses one whose default accepts anything (the image's reference then says containerPolicy)."""
    if not valid_image_reference(image):
        raise ValueError(f"Not an image reference: {image!r}.")
    if download_only and apply:
        raise ValueError("bootc switch --download-only excludes --apply.")
    if soft_reboot not in SOFT_REBOOT_MODES or (soft_reboot and not apply):
        raise ValueError("--soft-reboot is auto or required, and only with --apply.")
    argv = ("bootc", "switch", "--quiet") + (("--download-only",) if download_only else ()) + (
        ("--apply",) if apply else ()) + ((f"--soft-reboot={soft_reboot}",) if soft_reboot else ()) + (
        ("--enforce-container-sigpolicy",) if enforce_signatures else ()) + (image,)
    return Command(argv, f"switch to {image}" + (" (download only)" if download_only else "")
                   + (" and reboot" if apply else "") + (", enforcing signatures" if enforce_signatures else ""))


def bootc_switch_in_place(image):
    """`bootc switch --mutate-in-place`: the booted deployment pulls from `image` from now on; nothing is pulled or
    staged (bootc rewrites its origin; the flag is hidden, and upstream's own kickstart advice uses it)."""
    if not valid_image_reference(image):
        raise ValueError(f"Not an image reference: {image!r}.")
    return Command(("bootc", "switch", "--quiet", "--mutate-in-place", image), f"track {image} again")


def bootc_rollback(*, apply=False, soft_reboot=""):
    if soft_reboot not in SOFT_REBOOT_MODES or (soft_reboot and not apply):
        raise ValueError("--soft-reboot is auto or required, and only with --apply.")
    argv = ("bootc", "rollback") + (("--apply",) if apply else ()) + (
        (f"--soft-reboot={soft_reboot}",) if soft_reboot else ())
    return Command(argv, "roll back" + (" and reboot" if apply else " at next boot"))


def df_sysroot():
    """The free bytes on /sysroot, where bootc writes deployments (a rollout's pre-flight check)."""
    return Command(("df", "--output=avail", "-B1", "/sysroot"), "read the free space on /sysroot")


def ostree_admin_pin(index, *, unpin=False):
    """`ostree admin pin INDEX`: keep the deployment at INDEX in ostree's list (the staged one first, then the one the
    next boot takes, then the other) through later updates, as a fallback; `--unpin` lets it go. Every ostree release
    takes a number; the names `booted` and `rollback` only recent ones."""
    index = int(index)
    if index < 0:
        raise ValueError("A deployment index is 0 or more.")
    argv = ("ostree", "admin", "pin") + (("--unpin",) if unpin else ()) + (str(index),)
    return Command(argv, ("unpin" if unpin else "pin") + f" the deployment at index {index}")


def ostree_config_diff():
    """What changed in /etc since the deployment was made: ostree's three-way merge base (/usr/etc) against /etc."""
    return Command(("ostree", "admin", "config-diff"), "list what changed in /etc")


def package_list():
    """The host's installed packages, read the way a build reads its image's (portal.packages)."""
    return Command(("sh", "-c", packages.PACKAGE_SCRIPT), "list the installed packages")


def etc_file(path, *, image=False, limit=65536):
    """The host's /etc/<path> (or, with `image`, the image's version of it, /usr/etc/<path>): its size and its first
    `limit` + 1 bytes (one more, so a larger file shows as larger)."""
    if not path.startswith("/etc/") or "\x00" in path or "\n" in path or "/../" in path + "/":
        raise ValueError(f"{path!r} is not a path under /etc.")
    where = "/usr" + path if image else path
    return Command(("sh", "-c", etcfiles.ETC_FILE_SCRIPT, "sh", where, str(int(limit) + 1)),
                   f"read {where}")


def systemctl_reboot():
    return Command(("systemctl", "reboot"), "reboot")


def systemctl_is_system_running():
    return Command(("systemctl", "is-system-running"), "ask systemd whether the boot finished without failed units")


def boot_test_script(script):
    """A definition's own check, run in its throwaway boot-test VM (never on a team's hosts)."""
    if not script.strip():
        raise ValueError("The test script is empty.")
    return Command(("sh", "-c", script), "run the definition's boot-test script")


def journalctl(unit, *, boot=0, lines=200):
    if unit not in JOURNAL_UNITS:
        raise ValueError(f"{unit!r} is not one of the bootc and greenboot units.")
    if boot not in (0, -1):
        raise ValueError("Only this boot (0) and the previous one (-1) are read.")
    argv = ("journalctl", "--no-pager", "-o", "short-iso", "-u", unit, "-b", str(boot), "-n", str(int(lines)))
    return Command(argv, f"read the journal of {unit}")


# --- Connecting ------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where and how to reach one host. `host_key` is the pinned `type base64` line; None only for `fetch_host_key`."""

    address: str
    port: int = 22
    username: str = "root"
    host_key: str | None = None
    private_key: "paramiko.PKey | None" = None
    jump: "Target | None" = None
    private_key_text: str = ""  # the same key as OpenSSH text, for the kept-open connections of portal.sshpool
    name: str = ""
    connect_timeout: float = CONNECT_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    auth_timeout: float = AUTH_TIMEOUT

    def label(self):
        return self.name or f"{self.address}:{self.port}"


@dataclass
class CommandResult:
    command: str
    exit_status: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.exit_status == 0 and not self.truncated

    def text(self):
        """stdout as storable text (a NUL or a byte that is not UTF-8 shows as U+FFFD)."""
        return decoded(self.stdout)

    def error_text(self):
        return decoded(self.stderr).strip()


def _open_socket(target):
    import paramiko  # heavy: loaded where a connection is made (see Connection.open)

    if target.jump is not None:
        jump = Connection(target.jump)
        jump.open()
        try:
            channel = jump.transport.open_channel(
                "direct-tcpip", (target.address, target.port), ("127.0.0.1", 0), timeout=target.connect_timeout
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            jump.close()
            raise HostUnreachable(f"The jump host {target.jump.label()} could not reach {target.label()}: {exc}") from None
        if channel is None:
            jump.close()
            raise HostUnreachable(f"The jump host {target.jump.label()} did not open a channel to {target.label()}.")
        return channel, jump
    try:
        sock = socket.create_connection((target.address, target.port), timeout=target.connect_timeout)
    except TimeoutError:
        raise HostUnreachable(f"{target.label()} did not answer within {target.connect_timeout:g} s.") from None
    except OSError as exc:
        raise HostUnreachable(f"{target.label()} is unreachable: {exc.strerror or exc}.") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, None


class Connection:
    """One SSH connection to a target, checked and authenticated. Use as a context manager."""

    def __init__(self, target):
        self.target = target
        self.transport = None
        self._jump = None
        self.commands_sent = 0

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def open(self, *, authenticate=True):
        target = self.target
        if authenticate and not target.host_key:
            raise HostKeyUnknown(f"No host key is confirmed for {target.label()}: confirm its fingerprint first.")
        # paramiko (with invoke, PyNaCl and its ciphers) takes a fifth of a second to import: the processes that never
        # open an SSH connection (most manage.py commands, web workers, daphne) do not load it.
        import paramiko

        sock, self._jump = _open_socket(target)
        try:
            transport = paramiko.Transport(sock)
            self.transport = transport
            transport.banner_timeout = target.handshake_timeout
            transport.handshake_timeout = target.handshake_timeout
            transport.auth_timeout = target.auth_timeout
            options = transport.get_security_options()
            options.kex = [k for k in KEX_ORDER if k in options.kex] or options.kex
            options.ciphers = [c for c in CIPHER_ORDER if c in options.ciphers] or options.ciphers
            if target.host_key:
                # Ask only for the pinned key's type, so a server with several host keys presents the one we know.
                pinned_type = key_type(target.host_key)
                wanted = ("rsa-sha2-512", "rsa-sha2-256") if pinned_type == "ssh-rsa" else (pinned_type,)
                options.key_types = [t for t in wanted if t in HOST_KEY_TYPES] or list(wanted)
            else:
                options.key_types = [t for t in HOST_KEY_TYPES if t in options.key_types]
            try:
                transport.start_client(timeout=target.handshake_timeout)
            except paramiko.SSHException as exc:
                if "banner" in str(exc).lower():
                    raise HostUnreachable(f"{target.label()} accepted the connection but did not speak SSH within "
                                          f"{target.handshake_timeout:g} s.") from None
                raise ProtocolError(f"SSH handshake with {target.label()} failed: {exc}") from None
            except (EOFError, OSError) as exc:
                raise HostUnreachable(f"{target.label()} closed the connection during the handshake: {exc}") from None
            if not transport.is_active() or not getattr(transport, "initial_kex_done", False):
                # start_client returns quietly when its timeout passes mid-handshake.
                raise HostUnreachable(f"{target.label()} did not complete the SSH handshake within "
                                      f"{target.handshake_timeout:g} s.")
            presented = transport.get_remote_server_key()
            if target.host_key and not _same_key(presented, target.host_key):
                raise HostKeyMismatch(
                    f"{target.label()} presented a different host key ({fingerprint(_key_line(presented))}) from the "
                    f"confirmed one ({fingerprint(target.host_key)}). Nothing was sent to it.",
                    presented_key=_key_line(presented),
                )
            self.presented_key = _key_line(presented)
            if not authenticate:
                return self
            try:
                transport.auth_publickey(target.username, target.private_key)
            except paramiko.AuthenticationException:
                raise AuthenticationFailed(
                    f"{target.label()} refused the team's key for user {target.username!r}: add the team's public key to "
                    f"that user's authorized_keys."
                ) from None
            except paramiko.SSHException as exc:
                if "timeout" in str(exc).lower():
                    raise CommandTimeout(f"Authentication on {target.label()} took longer than "
                                         f"{target.auth_timeout:g} s.") from None
                raise ProtocolError(f"Authentication on {target.label()} failed: {exc}") from None
            except (EOFError, OSError) as exc:
                raise HostUnreachable(f"{target.label()} closed the connection during authentication: {exc}") from None
            return self
        except BaseException:
            self.close()
            raise

    def run(self, command, *, timeout=COMMAND_TIMEOUT, max_output=MAX_OUTPUT_BYTES, on_output=None, on_tick=None):
        """Run one allow-listed command; returns a CommandResult. `on_output(bytes)` sees stdout/stderr as it arrives;
        `on_tick()` is called at least once a second while it runs (a quiet `bootc upgrade` may pull for minutes, and the
        caller's run must keep its heartbeat)."""
        if not isinstance(command, Command):
            raise TypeError("Only allow-listed commands (portal.ssh.Command) can be run.")
        import paramiko  # heavy: loaded where a connection is made (see open)

        line = command.for_user(self.target.username)
        started = time.monotonic()
        deadline = started + timeout
        try:
            channel = self.transport.open_session(timeout=max(deadline - time.monotonic(), 0.1))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachable(f"{self.target.label()} did not open a session: {exc}") from None
        stdout, stderr = bytearray(), bytearray()
        truncated = False

        def remaining():
            left = deadline - time.monotonic()
            if left <= 0:
                raise CommandTimeout(
                    f"`{shlex.join(command.argv)}` on {self.target.label()} did not finish within {timeout:g} s."
                )
            return left

        def drain_stderr():
            while channel.recv_stderr_ready():
                data = channel.recv_stderr(65536)
                if not data:
                    return
                stderr.extend(data)
                if on_output:
                    on_output(data)

        try:
            # `line` is an allow-listed Command's argument list, each argument quoted by shlex.join (Command.for_user).
            channel.exec_command(line)  # nosec B601
            self.commands_sent += 1
            while True:
                channel.settimeout(min(remaining(), 1.0))
                try:
                    data = channel.recv(65536)
                except TimeoutError:
                    data = None
                if on_tick:
                    on_tick()
                drain_stderr()
                if data == b"":
                    break  # end of stdout
                if data:
                    stdout.extend(data)
                    if on_output:
                        on_output(data)
                if len(stdout) + len(stderr) > max_output:
                    truncated = True
                    del stdout[max_output:]
                    del stderr[max(max_output - len(stdout), 0):]
                    break
            exit_status = -1
            if not truncated:
                while not channel.status_event.wait(min(remaining(), 1.0)):
                    drain_stderr()
                    if on_tick:
                        on_tick()
                drain_stderr()
                exit_status = channel.recv_exit_status()
        except (EOFError, OSError, paramiko.SSHException) as exc:
            raise HostUnreachable(f"The connection to {self.target.label()} broke: {exc}") from None
        finally:
            channel.close()
        return CommandResult(
            command=shlex.join(command.argv), exit_status=exit_status, stdout=bytes(stdout), stderr=bytes(stderr),
            truncated=truncated, seconds=time.monotonic() - started,
        )

    def close(self):
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None


def run(target, command, **kwargs):
    """Connect, check, authenticate, run one command, disconnect."""
    with Connection(target) as connection:
        return connection.run(command, **kwargs)


def fetch_host_key(address, port=22, *, jump=None, timeout=CONNECT_TIMEOUT):
    """The host key the server presents (`type base64`), for a person to confirm. Never trusted by itself."""
    target = Target(address=address, port=port, jump=jump, connect_timeout=timeout, handshake_timeout=timeout)
    connection = Connection(target)
    try:
        connection.open(authenticate=False)
        return connection.presented_key
    finally:
        connection.close()
