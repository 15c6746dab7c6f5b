"""The simulated fleet: bootc hosts that speak real SSH, for demos, tests and benchmarks.

One asyncio event loop serves N hosts. Each host is a real SSH server (asyncssh) on its own loopback port with its own
host key, accepts the team's public key, and runs the portal's allow-listed commands against a state machine that follows
`bootc-reference.md`:

- `bootc status --format=json --format-version=1` prints a v1 `BootcHost` document (canonical: sorted keys, compact),
  with `cachedUpdate`, `rollbackQueued` and `spec.bootOrder`;
- `bootc upgrade [--check|--apply]` resolves the tracked tag in the real registry (HTTP API v2; a manifest list is resolved
  to the host's architecture, as bootc does) and stages, reports, or stages and reboots;
- `bootc switch [--apply] IMAGE` changes `spec.image`, then behaves like upgrade;
- `bootc rollback [--apply]` queues the rollback (discarding a staged entry) or undoes a queued one;
- `systemctl reboot` drops connections, stays down for `reboot_seconds`, and boots the next entry; with the
  `fail_health_check` fault armed, the new deployment fails greenboot's checks and the host falls back to the previous one
  and makes it permanent with `bootc rollback`, exactly as greenboot does;
- `journalctl -u UNIT -b 0|-1` prints what the simulated units logged in this or the previous boot.

Faults: `down` (connection refused), `hang` (accepts TCP, never speaks SSH), `slow` (seconds before each command
answers), `fail_health_check` (the next staged deployment fails its health check), `flood` (status prints megabytes),
`garbage` (status prints broken JSON), `nul` (status holds a NUL: `"byte"` a raw NUL byte, `"escaped"` a `\\u0000` in a
JSON string), and `rotate_host_key()` (a reinstalled host, or a man in the middle).
"""

import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import json
import logging
import secrets
import shlex
import socket
import tarfile
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]


def now_rfc3339():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_checksum():
    return secrets.token_hex(32)


# --- The registry, as a host sees it ---------------------------------------------------------------------------------


class RegistryError(Exception):
    pass


def split_reference(reference):
    """`host:port/repo/name:tag` or `...@sha256:...` -> (registry, repository, tag or digest)."""
    name, digest = reference, None
    if "@" in reference:
        name, digest = reference.split("@", 1)
    registry, _, rest = name.partition("/")
    if not rest or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise RegistryError(f"{reference}: not a fully qualified reference (registry/repository:tag)")
    repository, tag = rest, "latest"
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = rest.rsplit(":", 1)
    return registry, repository, digest or tag


def _http(method, url, *, data=None, headers=None, timeout=10):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        # Reviewed: every caller builds an http:// URL of the loopback registry the simulated hosts pull from.
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 # nosec B310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"cannot reach {url.split('/v2/')[0]}: {getattr(exc, 'reason', exc)}") from None


def _base(registry):
    host = registry.split(":")[0]
    scheme = "http" if host in ("127.0.0.1", "localhost", "::1") else "https"
    return f"{scheme}://{registry}/v2/"


def resolve_image(reference, architecture="amd64"):
    """What `bootc upgrade` would pull: {digest (per-arch manifest), version, timestamp, architecture}."""
    registry, repository, ref = split_reference(reference)
    url = f"{_base(registry)}{repository}/manifests/{ref}"
    status, headers, body = _http("GET", url, headers={"Accept": ", ".join(MANIFEST_TYPES)})
    if status == 404:
        raise RegistryError(f"{reference}: manifest unknown")
    if status != 200:
        raise RegistryError(f"{reference}: registry answered HTTP {status}")
    manifest = json.loads(body)
    digest = headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        chosen = next((m for m in manifest.get("manifests", [])
                       if m.get("platform", {}).get("architecture") == architecture), None)
        if chosen is None:
            raise RegistryError(f"{reference}: no image for architecture {architecture}")
        digest = chosen["digest"]
        status, headers, body = _http("GET", f"{_base(registry)}{repository}/manifests/{digest}",
                                      headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if status != 200:
            raise RegistryError(f"{reference}: manifest {digest} unknown")
        manifest = json.loads(body)
    config_digest = manifest.get("config", {}).get("digest")
    labels, created = {}, None
    if config_digest:
        status, _, body = _http("GET", f"{_base(registry)}{repository}/blobs/{config_digest}")
        if status == 200:
            config = json.loads(body)
            labels = (config.get("config") or {}).get("Labels") or {}
            created = config.get("created")
    return {
        "digest": digest,
        "version": labels.get("org.opencontainers.image.version") or labels.get("version"),
        "timestamp": created,
        "architecture": architecture,
    }


def push_demo_image(registry, repository, *, version, tags, architectures=("amd64", "arm64")):
    """Push a tiny multi-arch bootc-labelled image straight through the registry API; returns {arch: digest, "": index}.

    Used to give `make run` and the tests real tags to track without podman. Same version and architectures give the same
    digests, so pushing again is idempotent.
    """
    base = _base(registry) + repository

    def upload(blob):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, _, _ = _http("HEAD", f"{base}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, _ = _http("POST", f"{base}/blobs/uploads/")
        if status not in (201, 202):
            raise RegistryError(f"upload refused: HTTP {status}")
        location = headers.get("Location", "")
        if location.startswith("/"):
            location = f"{_base(registry)[:-4]}{location}"
        separator = "&" if "?" in location else "?"
        status, _, _ = _http("PUT", f"{location}{separator}digest={digest}", data=blob,
                             headers={"Content-Type": "application/octet-stream"})
        if status not in (201, 204):
            raise RegistryError(f"blob upload failed: HTTP {status}")
        return digest

    def put_manifest(ref, body, media_type):
        status, _, text = _http("PUT", f"{base}/manifests/{ref}", data=body, headers={"Content-Type": media_type})
        if status not in (201, 200):
            raise RegistryError(f"manifest push failed: HTTP {status} {text[:200]!r}")

    digests = {}
    entries = []
    for arch in architectures:
        layer = _tiny_layer(f"{repository} {version} {arch}\n")
        layer_digest = upload(layer)
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        config = json.dumps({
            "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {"Labels": {"containers.bootc": "1", "ostree.bootable": "1",
                                  "org.opencontainers.image.version": version}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }, sort_keys=True).encode()
        config_digest = upload(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPES[2],
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": len(layer)}],
        }, sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        put_manifest(digest, manifest, MANIFEST_TYPES[2])
        digests[arch] = digest
        entries.append({"mediaType": MANIFEST_TYPES[2], "digest": digest, "size": len(manifest),
                        "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPES[0], "manifests": entries},
                       sort_keys=True).encode()
    digests[""] = "sha256:" + hashlib.sha256(index).hexdigest()
    put_manifest(digests[""], index, MANIFEST_TYPES[0])
    for tag in tags:
        put_manifest(tag, index, MANIFEST_TYPES[0])
    return digests


def _tiny_layer(text):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("etc/os-release-demo")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


# --- One host's bootc state ------------------------------------------------------------------------------------------


@dataclass
class Deployment:
    image: str
    digest: str
    version: str | None = None
    timestamp: str | None = None
    architecture: str = "amd64"
    checksum: str = field(default_factory=fake_checksum)
    pinned: bool = False
    transport: str = "registry"
    will_fail_health_check: bool = False

    def entry(self, cached_update=None):
        return {
            "cachedUpdate": cached_update,
            "composefs": None,
            "downloadOnly": False,
            "image": {
                "architecture": self.architecture,
                "image": {"image": self.image, "transport": self.transport},
                "imageDigest": self.digest,
                "timestamp": self.timestamp,
                "version": self.version,
            },
            "incompatible": False,
            "ostree": {"checksum": self.checksum, "deploySerial": 0, "stateroot": "default"},
            "pinned": self.pinned,
            "softRebootCapable": False,
            "store": "ostreeContainer",
        }


@dataclass
class HostState:
    name: str
    port: int = 0
    architecture: str = "amd64"
    spec_image: str = ""
    booted: Deployment | None = None
    staged: Deployment | None = None
    rollback: Deployment | None = None
    rollback_queued: bool = False
    cached_update: dict | None = None
    boot_id: int = 1
    journal: list = field(default_factory=list)  # [(boot_id, unit, text)]
    host_key: str = ""  # OpenSSH private key text

    def to_json(self):
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        for slot in ("booted", "staged", "rollback"):
            if data.get(slot):
                data[slot] = Deployment(**data[slot])
        data["journal"] = [tuple(item) for item in data.get("journal", [])]
        return cls(**data)


class CommandError(Exception):
    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class SimHost:
    """One simulated bootc host: its state machine, its SSH listener and its faults."""

    def __init__(self, fleet, state):
        self.fleet = fleet
        self.state = state
        self.key = asyncssh.import_private_key(state.host_key)
        self.acceptor = None
        self.hang_server = None
        self.connections = set()
        self.faults = {"down": False, "hang": False, "slow": 0.0, "fail_health_check": False, "flood": False,
                       "garbage": False, "nul": ""}
        self.rebooting = False
        self.commands = []  # every command line received, for tests (the MITM test counts them)
        self.logins = 0
        self.running = 0  # commands running now, and the most at once (the pool's per-host limit is tested by it)
        self.most_running = 0
        self._status_cache = None

    @property
    def name(self):
        return self.state.name

    @property
    def port(self):
        return self.state.port

    def public_host_key(self):
        """`type base64` of the current host key."""
        return " ".join(self.key.export_public_key("openssh").decode().split()[:2])

    # --- listening ---

    async def start(self):
        if self.faults["hang"]:
            await self._start_hang()
            return
        if self.faults["down"] or self.rebooting:
            return
        self.acceptor = await asyncssh.create_server(
            lambda: _Server(self), "127.0.0.1", self.state.port, server_host_keys=[self.key],
            process_factory=self._process, reuse_address=True, login_timeout=30,
            keepalive_interval=0, encoding=None,
        )
        if not self.state.port:
            self.state.port = self.acceptor.sockets[0].getsockname()[1]
            self.fleet.save(self)

    async def stop(self, *, drop_connections=True):
        if self.acceptor is not None:
            self.acceptor.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.acceptor.wait_closed(), 2)
            self.acceptor = None
        if self.hang_server is not None:
            self.hang_server.close()
            self.hang_server = None
        if drop_connections:
            for connection in list(self.connections):
                connection.abort()
            self.connections.clear()

    async def _start_hang(self):
        held = []

        async def hold(reader, writer):
            held.append(writer)  # accept TCP, say nothing: the client's handshake deadline must fire
            await asyncio.sleep(3600)

        self.hang_server = await asyncio.start_server(hold, "127.0.0.1", self.state.port, reuse_address=True)

    async def set_fault(self, name, value):
        self.faults[name] = value
        if name in ("down", "hang"):
            await self.stop()
            await self.start()

    async def rotate_host_key(self):
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.state.host_key = self.key.export_private_key().decode()
        self.fleet.save(self)
        await self.stop()
        await self.start()

    # --- commands ---

    async def _process(self, process):
        line = process.command or ""
        self.commands.append(line)
        del self.commands[:-1000]
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self._answer(process, line)
        finally:
            self.running -= 1

    async def _answer(self, process, line):
        try:
            argv = shlex.split(line)
        except ValueError:
            argv = []
        if argv[:3] == ["sudo", "-n", "--"]:
            argv = argv[3:]
        try:
            if self.faults["slow"]:
                await asyncio.sleep(self.faults["slow"])
            out = await self.execute(argv)
            if out:
                process.stdout.write(out.encode() if isinstance(out, str) else out)
            process.exit(0)
        except CommandError as exc:
            process.stderr.write(f"{exc}\n".encode())
            process.exit(exc.status)
        except (asyncssh.Error, OSError, BrokenPipeError):
            pass
        except Exception as exc:  # noqa: BLE001 - a bug in the simulator must not kill the loop
            log.exception("simulated %s failed on %r", self.name, line)
            with contextlib.suppress(Exception):
                process.stderr.write(f"error: internal simulator error: {exc}\n".encode())
                process.exit(1)

    async def execute(self, argv):
        if argv[:2] == ["bootc", "status"]:
            return self.cmd_status(argv[2:])
        if argv[:2] == ["bootc", "upgrade"]:
            return await self.cmd_upgrade(argv[2:])
        if argv[:2] == ["bootc", "switch"]:
            return await self.cmd_switch(argv[2:])
        if argv[:2] == ["bootc", "rollback"]:
            return await self.cmd_rollback(argv[2:])
        if argv == ["systemctl", "reboot"]:
            self.schedule_reboot()
            return ""
        if argv[:1] == ["journalctl"]:
            return self.cmd_journal(argv[1:])
        raise CommandError(f"bash: {argv[0] if argv else ''}: command not found", 127)

    def status_document(self):
        state = self.state
        cached = state.cached_update
        booted = state.booted.entry(cached) if state.booted else None
        spec_image = {"image": state.spec_image, "transport": "registry"} if state.spec_image else None
        return {
            "apiVersion": "org.containers.bootc/v1",
            "kind": "BootcHost",
            "metadata": {"name": "host"},
            "spec": {"bootOrder": "rollback" if state.rollback_queued else "default", "image": spec_image},
            "status": {
                "booted": booted,
                "readOnly": False,
                "rollback": state.rollback.entry() if state.rollback else None,
                "rollbackQueued": state.rollback_queued,
                "staged": state.staged.entry() if state.staged else None,
                "type": "bootcHost" if state.booted else None,
                "usrOverlay": None,
            },
        }

    def cmd_status(self, args):
        if self.faults["flood"]:
            return "x" * (8 * 1024 * 1024)
        if self.faults["garbage"]:
            return '{"apiVersion": "org.containers.bootc/v1", "kind": "BootcHost", "status": {"booted": {"ima'
        if self._status_cache is None:
            self._status_cache = json.dumps(self.status_document(), sort_keys=True, separators=(",", ":")) + "\n"
        if self.faults["nul"]:
            nul = "\x00" if self.faults["nul"] == "byte" else "\\u0000"
            return self._status_cache.replace('"version":"', f'"version":"{nul}', 1)
        return self._status_cache

    def changed(self):
        self._status_cache = None
        self.fleet.save(self)

    async def _resolve(self, reference):
        try:
            return await asyncio.to_thread(resolve_image, reference, self.state.architecture)
        except RegistryError as exc:
            raise CommandError(f"error: Upgrading: Creating importer: failed to invoke method OpenImage: {exc}") from None
        except (ValueError, KeyError) as exc:
            raise CommandError(f"error: Upgrading: reading manifest: {exc}") from None

    def _new_deployment(self, reference, info):
        deployment = Deployment(image=reference, digest=info["digest"], version=info.get("version"),
                                timestamp=info.get("timestamp"), architecture=self.state.architecture)
        deployment.will_fail_health_check = bool(self.faults["fail_health_check"])
        return deployment

    @staticmethod
    def _describe(prefix, reference, info):
        lines = [f"{prefix}: {reference}"]
        if info.get("version"):
            lines.append(f"  Version: {info['version']}")
        lines.append(f"  Digest: {info['digest']}")
        return "\n".join(lines) + "\n"

    async def cmd_upgrade(self, args):
        check, apply = "--check" in args, "--apply" in args
        unknown = [a for a in args if a not in ("--check", "--apply", "--quiet")]
        if unknown:
            raise CommandError(f"error: unexpected argument '{unknown[0]}' found", 2)
        if check and apply:
            raise CommandError("error: the argument '--check' cannot be used with '--apply'", 2)
        state = self.state
        if not state.booted or not state.spec_image:
            raise CommandError("error: Upgrading: No image source specified")
        info = await self._resolve(state.spec_image)
        if check:
            if info["digest"] in (state.booted.digest, state.staged.digest if state.staged else None):
                state.cached_update = None
                self.changed()
                return f"No changes in: {state.spec_image}\n"
            state.cached_update = {"architecture": info["architecture"],
                                   "image": {"image": state.spec_image, "transport": "registry"},
                                   "imageDigest": info["digest"], "timestamp": info.get("timestamp"),
                                   "version": info.get("version")}
            self.changed()
            return self._describe("Update available for", state.spec_image, info)
        out = self._stage(state.spec_image, info)
        if apply and state.staged is not None:
            self.schedule_reboot()
        return out

    def _stage(self, reference, info):
        state = self.state
        if info["digest"] == state.booted.digest and state.staged is None:
            return "No update available.\n"
        if state.staged is not None and state.staged.digest == info["digest"]:
            return "Staged update present, not changed.\n"
        if info["digest"] == state.booted.digest:
            state.staged = None  # going back to what is booted drops the staged entry
            state.rollback_queued = False
            self.changed()
            return "No update available.\n"
        state.staged = self._new_deployment(reference, info)
        state.rollback_queued = False
        self._log("ostree-finalize-staged.service", f"Staged deployment {info['digest']} for next boot")
        self.changed()
        return self._describe("Queued for next boot", reference, info) + "Total new layers: 1    Size: 1.2 kB\n"

    async def cmd_switch(self, args):
        apply = "--apply" in args
        targets = [a for a in args if not a.startswith("--")]
        unknown = [a for a in args if a.startswith("--") and a not in ("--apply", "--quiet", "--retain")]
        if unknown or len(targets) != 1:
            raise CommandError("error: Usage: bootc switch [OPTIONS] <TARGET>", 2)
        target = targets[0]
        state = self.state
        if not state.booted:
            raise CommandError("error: Switching: Not booted into a bootc deployment")
        if target == state.spec_image:
            return "Image specification is unchanged.\n"
        info = await self._resolve(target)
        state.spec_image = target
        state.cached_update = None
        out = self._stage(target, info)
        self.changed()
        if apply and state.staged is not None:
            self.schedule_reboot()
        return out

    async def cmd_rollback(self, args):
        apply = "--apply" in args
        if [a for a in args if a not in ("--apply",)]:
            raise CommandError("error: Usage: bootc rollback [--apply]", 2)
        state = self.state
        if state.rollback_queued:
            state.rollback_queued = False
            self.changed()
            out = "notice: Reverting queued rollback state\nNext boot: current deployment\n"
        else:
            if state.rollback is None:
                raise CommandError("error: No rollback available")
            state.staged = None
            state.rollback_queued = True
            self._log("bootc", "MESSAGE_ID=26f3b1eb24464d12aa5e7b544a6b5468 Queued rollback to "
                               f"{state.rollback.digest}")
            self.changed()
            out = "Next boot: rollback deployment\n"
        if apply and state.rollback_queued:
            self.schedule_reboot()
        return out

    def cmd_journal(self, args):
        unit, boot = None, 0
        for i, arg in enumerate(args):
            if arg == "-u" and i + 1 < len(args):
                unit = args[i + 1]
            if arg == "-b" and i + 1 < len(args):
                with contextlib.suppress(ValueError):
                    boot = int(args[i + 1])
        wanted_boot = self.state.boot_id + boot
        lines = [text for boot_id, name, text in self.state.journal
                 if boot_id == wanted_boot and (unit is None or name == unit)]
        if not lines:
            return "-- No entries --\n"
        return "\n".join(lines) + "\n"

    def _log(self, unit, text, boot_id=None):
        boot_id = boot_id or self.state.boot_id
        self.state.journal.append((boot_id, unit, f"{now_rfc3339()} {self.name} {unit.removesuffix('.service')}: {text}"))
        del self.state.journal[:-200]

    # --- rebooting ---

    def schedule_reboot(self):
        if not self.rebooting:
            self.rebooting = True
            asyncio.get_running_loop().create_task(self._reboot())

    async def _reboot(self):
        await asyncio.sleep(0.05)  # let the command's exit status reach the client first
        await self.stop()
        await asyncio.sleep(self.fleet.reboot_seconds)
        self._boot_next()
        self.rebooting = False
        await self.start()

    def _boot_next(self):
        state = self.state
        previous = state.booted
        state.boot_id += 1
        if state.rollback_queued and state.rollback is not None:
            state.booted, state.rollback = state.rollback, previous
            state.rollback_queued = False
            state.staged = None
            self._log("bootc", f"Booted rollback deployment {state.booted.digest}")
        elif state.staged is not None:
            new = state.staged
            state.staged = None
            if new.will_fail_health_check:
                # Boot the new deployment, fail the required checks until boot_counter reaches 0, fall back in GRUB,
                # then greenboot makes the fallback permanent with `bootc rollback`.
                failed_boot = state.boot_id
                self._log("greenboot-healthcheck.service", "Script '00_required_check.sh' FAILURE (exit code '1')",
                          failed_boot)
                self._log("greenboot-healthcheck.service", "greenboot health checks failed; boot_counter=0, "
                                                           "rebooting to the previous deployment", failed_boot)
                state.boot_id += 1
                new.will_fail_health_check = False
                state.booted, state.rollback = previous, new
                self._log("greenboot-rpm-ostree-grub2-check-fallback.service",
                          f"FALLBACK BOOT DETECTED! Default bootc deployment {new.digest} failed to boot; running "
                          "bootc rollback")
                self._log("bootc", "MESSAGE_ID=26f3b1eb24464d12aa5e7b544a6b5468 Rollback to "
                                   f"{previous.digest} made permanent")
                self.faults["fail_health_check"] = False
            else:
                state.booted, state.rollback = new, previous
                self._log("greenboot-healthcheck.service", "greenboot health checks passed")
                self._log("ostree-boot-complete.service", f"Booted {new.digest}")
        else:
            self._log("greenboot-healthcheck.service", "greenboot health checks passed")
        if state.cached_update and state.booted and state.cached_update.get("imageDigest") == state.booted.digest:
            state.cached_update = None
        self.changed()


class _Server(asyncssh.SSHServer):
    def __init__(self, host):
        self.host = host
        self.connection = None

    def connection_made(self, connection):
        self.connection = connection
        self.host.connections.add(connection)

    def connection_lost(self, exc):
        self.host.connections.discard(self.connection)

    def begin_auth(self, username):
        return True

    def password_auth_supported(self):
        return False

    def public_key_auth_supported(self):
        return True

    def validate_public_key(self, username, key):
        ok = username in self.host.fleet.users and key.public_data in self.host.fleet.authorized
        if ok:
            self.host.logins += 1
        return ok

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        # Acting as a jump host: forward to loopback only.
        return dest_host in ("127.0.0.1", "localhost")


# --- The fleet -------------------------------------------------------------------------------------------------------


class Fleet:
    """N simulated hosts in one event loop. `state_dir` keeps keys and state across restarts (None: in memory only)."""

    def __init__(self, *, authorized_keys=(), users=("root", "core"), state_dir=None, reboot_seconds=1.0):
        self.authorized = {asyncssh.import_public_key(line).public_data for line in authorized_keys}
        self.users = set(users)
        self.state_dir = Path(state_dir) if state_dir else None
        self.reboot_seconds = reboot_seconds
        self.hosts = {}
        self.loop = None
        self._thread = None

    def authorize(self, public_key_line):
        self.authorized.add(asyncssh.import_public_key(public_key_line).public_data)

    def save(self, host):
        if self.state_dir is not None:
            path = self.state_dir / f"{host.name}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(host.state.to_json())
            tmp.replace(path)

    def load_or_create(self, name, *, port=0, make_state=None):
        """The host `name`, from state_dir if it was saved before, else made by `make_state(HostState)`."""
        state = None
        if self.state_dir is not None and (self.state_dir / f"{name}.json").exists():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                state = HostState.from_json((self.state_dir / f"{name}.json").read_text())
        if state is None:
            state = HostState(name=name, port=port,
                              host_key=asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())
            if make_state:
                make_state(state)
        host = SimHost(self, state)
        self.hosts[name] = host
        self.save(host)
        return host

    async def start_all(self, *, batch=200):
        hosts = list(self.hosts.values())
        for i in range(0, len(hosts), batch):
            await asyncio.gather(*(host.start() for host in hosts[i:i + batch]))

    async def stop_all(self):
        await asyncio.gather(*(host.stop() for host in self.hosts.values()), return_exceptions=True)

    # --- running in a background thread (tests, benchmarks) ---

    def start_in_thread(self):
        started = threading.Event()
        errors = []

        def main():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.start_all())
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                errors.append(exc)
            started.set()
            if not errors:
                self.loop.run_forever()
            self.loop.run_until_complete(self.stop_all())
            self.loop.close()

        self._thread = threading.Thread(target=main, name="fleet-simulator", daemon=True)
        self._thread.start()
        started.wait(60)
        if errors:
            raise errors[0]
        return self

    def call(self, coroutine_function, *args, timeout=30):
        """Run a coroutine function in the fleet's loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine_function(*args), self.loop).result(timeout)

    def set_fault(self, name, fault, value=True):
        return self.call(self.hosts[name].set_fault, fault, value)

    def rotate_host_key(self, name):
        return self.call(self.hosts[name].rotate_host_key)

    def stop_thread(self):
        if self.loop is not None and self._thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self._thread = None


def free_ports(count):
    """`count` distinct free loopback ports (held open together while choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def demo_digest(text):
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def key_fingerprint(public_line):
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
