"""One simulated host's bootc: its state and the commands it answers, following `bootc-reference.md`.

- `bootc status --format=json --format-version=1` prints a v1 `BootcHost` document (canonical: sorted keys, compact),
  with `cachedUpdate`, `rollbackQueued` and `spec.bootOrder`, and only the fields the host's bootc version has
  (`architecture` and `rollback --apply` since 1.1.7, `softRebootCapable` and `--soft-reboot` since 1.7.0,
  `downloadOnly`, `--download-only` and `--from-downloaded` since 1.12.0). A flag the version does not know is refused
  the way clap refuses it: `error: unexpected argument '--download-only' found`, exit status 2.
- `bootc upgrade [--check|--apply] [--download-only|--from-downloaded] [--soft-reboot=auto|required]` resolves the
  tracked tag in the real registry and stages, reports, or stages and reboots. `--download-only` stages the entry
  locked (`downloadOnly: true`): a reboot does not apply it but drops it, its layers staying cached;
  `--from-downloaded` unlocks it without contacting the registry.
- `bootc switch [--apply] [--download-only] IMAGE` changes `spec.image`, then behaves like upgrade.
- `bootc rollback [--apply]` queues the rollback (discarding a staged entry) or undoes a queued one.
- A reboot drops connections, stays down for `reboot_seconds` and boots the next entry; a soft reboot (the entry
  `softRebootCapable`, asked with `--soft-reboot`) is a quarter of that. A new deployment whose health check fails
  boots `max_boot_attempts` times (GREENBOOT_MAX_BOOT_ATTEMPTS, greenboot's `boot_counter`), then GRUB falls back to
  the previous deployment and greenboot makes it permanent with `bootc rollback`.
- `journalctl -u UNIT -b 0|-1` prints what the simulated units logged in this or the previous boot.
- `df --output=avail -B1 /sysroot` prints the free space (the rollout's pre-flight check).
- `ostree admin pin [--unpin|-u] INDEX` pins a deployment by its index in ostree's list (the staged one first, then
  the next boot's, then the other), as ostree does: a staged deployment cannot be pinned ("Cannot pin staged
  deployment"), an index past the end is refused ("Out of range deployment index 3, expected < 2"). A pinned
  deployment is never pruned: when a new boot would drop it (the old rollback), it moves to `otherDeployments`
  (bootc 1.3.0 and later report them) and stays there until it is unpinned and the next deployment prunes it.

Faults (`faults`): `fail_health_check` (the next new deployment fails greenboot), `failure_probability` (each new
deployment fails greenboot with this probability, drawn from the host's name and the digest, so runs repeat),
`slow_download` (seconds a download takes), `disk_full` (the download fails with ENOSPC), `never_come_back` (a reboot
does not end while the fault is set: clearing it boots the host, as if someone powered it on), `pin_fails` (`ostree
admin pin` cannot write the deployment's origin, as on a read-only /sysroot), plus the SSH-level ones of
`hosts.simulator`.
"""

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from . import simruntime
from .simregistry import RegistryError, resolve_image

NEWEST_BOOTC = "1.16.9"
IMAGE_BYTES = 800 * 1024 * 1024  # what one new deployment takes on /sysroot


def now_rfc3339():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_checksum():
    return secrets.token_hex(32)


def version_tuple(text):
    """"1.12.0" -> (1, 12, 0); anything unreadable counts as the newest (a simulator default, never a guess on a host)."""
    try:
        return tuple(int(part) for part in str(text).split(".")[:3])
    except ValueError:
        return version_tuple(NEWEST_BOOTC)


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
    download_only: bool = False
    soft_reboot_capable: bool = False
    signature: str = ""  # "containerPolicy" when pulled with --enforce-container-sigpolicy; bootc omits it otherwise

    def entry(self, cached_update=None, bootc_version=NEWEST_BOOTC):
        version = version_tuple(bootc_version)
        reference = {"image": self.image, "transport": self.transport}
        if self.signature:
            reference["signature"] = self.signature
        image = {"image": reference, "imageDigest": self.digest, "timestamp": self.timestamp, "version": self.version}
        if version >= (1, 1, 7):
            image["architecture"] = self.architecture
        entry = {"cachedUpdate": cached_update, "image": image, "incompatible": False, "pinned": self.pinned,
                 "store": "ostreeContainer",
                 "ostree": {"checksum": self.checksum, "deploySerial": 0}}
        if version >= (1, 3, 0):
            entry["ostree"]["stateroot"] = "default"
        if version >= (1, 7, 0):
            entry["softRebootCapable"] = self.soft_reboot_capable
        if version >= (1, 9, 0):
            entry["composefs"] = None
        if version >= (1, 12, 0):
            entry["downloadOnly"] = self.download_only
        return entry


@dataclass
class HostState:
    name: str
    port: int = 0
    architecture: str = "amd64"
    spec_image: str = ""
    spec_signature: str = ""  # how the next pulls verify: "containerPolicy" after switch --enforce-container-sigpolicy
    booted: Deployment | None = None
    staged: Deployment | None = None
    rollback: Deployment | None = None
    rollback_queued: bool = False
    cached_update: dict | None = None
    other_deployments: list = field(default_factory=list)  # pinned deployments neither booted, staged nor rollback
    boot_id: int = 1
    journal: list = field(default_factory=list)  # [(boot_id, unit, text)]
    host_key: str = ""  # OpenSSH private key text
    bootc_version: str = NEWEST_BOOTC
    soft_reboot_capable: bool = False  # whether new deployments may be soft-rebooted into (same kernel, initramfs)
    disk_free_bytes: int = 20 * 1024 ** 3
    cached_layers: list = field(default_factory=list)  # digests whose layers a dropped download-only entry left
    max_boot_attempts: int = 3  # GREENBOOT_MAX_BOOT_ATTEMPTS
    last_downtime_seconds: float | None = None
    last_reboot_soft: bool = False
    runtime: dict = field(default_factory=dict)  # what people changed since boot (hosts.simruntime)

    def to_json(self):
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        for slot in ("booted", "staged", "rollback"):
            if data.get(slot):
                data[slot] = Deployment(**data[slot])
        data["other_deployments"] = [Deployment(**item) for item in data.get("other_deployments", [])]
        data["journal"] = [tuple(item) for item in data.get("journal", [])]
        return cls(**data)


class CommandError(Exception):
    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


FAULTS = {"down": False, "hang": False, "slow": 0.0, "fail_health_check": False, "flood": False, "garbage": False,
          "nul": "", "failure_probability": 0.0, "slow_download": 0.0, "disk_full": False, "never_come_back": False,
          "pin_fails": False}


def unexpected(argument):
    return CommandError(f"error: unexpected argument '{argument}' found", 2)


class BootcMachine:
    """bootc's commands and boot sequence over `self.state`. The SSH host (`hosts.simulator.SimHost`) gives it
    `fleet` (save, reboot_seconds), `faults`, `stop()` and `start()`."""

    rebooting = False
    held_down = None  # (when it went down, soft) of a reboot that never_come_back holds
    _status_cache = None

    @property
    def bootc_version(self):
        return version_tuple(self.state.bootc_version)

    def _flags(self, args, known):
        """Check `args` against the flags this bootc version knows: {flag: value} (value "" for a bare flag)."""
        gates = {"--download-only": (1, 12, 0), "--from-downloaded": (1, 12, 0), "--soft-reboot": (1, 7, 0)}
        flags = {}
        for arg in args:
            name, _, value = arg.partition("=")
            if name not in known or self.bootc_version < gates.get(name, (0,)):
                raise unexpected(name)
            flags[name] = value
        if "--soft-reboot" in flags and flags["--soft-reboot"] not in ("auto", "required"):
            raise CommandError(f"error: invalid value '{flags['--soft-reboot']}' for '--soft-reboot <SOFT_REBOOT>'", 2)
        return flags

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
        if argv[:1] == ["df"]:
            return self.cmd_df(argv[1:])
        if argv[:3] == ["ostree", "admin", "pin"]:
            return self.cmd_pin(argv[3:])
        out = simruntime.execute(self, argv, CommandError)
        if out is not None:
            return out
        raise CommandError(f"bash: {argv[0] if argv else ''}: command not found", 127)

    # --- status ---

    def status_document(self):
        state = self.state
        version = state.bootc_version
        cached = state.cached_update
        booted = state.booted.entry(cached, version) if state.booted else None
        spec_image = {"image": state.spec_image, "transport": "registry"} if state.spec_image else None
        if spec_image and state.spec_signature:
            spec_image["signature"] = state.spec_signature
        status = {
            "booted": booted,
            "rollback": state.rollback.entry(None, version) if state.rollback else None,
            "rollbackQueued": state.rollback_queued,
            "staged": state.staged.entry(None, version) if state.staged else None,
            "type": "bootcHost" if state.booted else None,
        }
        if state.other_deployments and self.bootc_version >= (1, 3, 0):
            status["otherDeployments"] = [entry.entry(None, version) for entry in state.other_deployments]
        if self.bootc_version >= (1, 14, 0):
            status["usrOverlay"] = simruntime.usr_overlay(self)
        if self.bootc_version >= (1, 16, 7):
            status["readOnly"] = False
        return {
            "apiVersion": "org.containers.bootc/v1",
            "kind": "BootcHost",
            "metadata": {"name": "host"},
            "spec": {"bootOrder": "rollback" if state.rollback_queued else "default", "image": spec_image},
            "status": status,
        }

    def cmd_status(self, args):
        # --format-version arrived with bootc 0.1.14 (bootc-dev/bootc#661, July 2024); older releases refuse it.
        if any(arg.startswith("--format-version") for arg in args) and self.bootc_version < (0, 1, 14):
            raise unexpected("--format-version")
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

    # --- upgrade, switch ---

    async def _resolve(self, reference):
        try:
            return await asyncio.to_thread(resolve_image, reference, self.state.architecture)
        except RegistryError as exc:
            raise CommandError(f"error: Upgrading: Creating importer: failed to invoke method OpenImage: {exc}") from None
        except (ValueError, KeyError) as exc:
            raise CommandError(f"error: Upgrading: reading manifest: {exc}") from None

    def _fails_health_check(self, digest):
        if self.faults["fail_health_check"]:
            return True
        probability = float(self.faults.get("failure_probability") or 0)
        if probability <= 0:
            return False
        seed = hashlib.sha256(f"{self.state.name}:{digest}".encode()).digest()
        return random.Random(seed).random() < probability  # noqa: S311 - a repeatable simulation, not crypto

    def _new_deployment(self, reference, info, *, download_only=False, signature=None):
        return Deployment(image=reference, digest=info["digest"], version=info.get("version"),
                          timestamp=info.get("timestamp"), architecture=self.state.architecture,
                          will_fail_health_check=self._fails_health_check(info["digest"]),
                          download_only=download_only, soft_reboot_capable=self.state.soft_reboot_capable,
                          signature=self.state.spec_signature if signature is None else signature)

    @staticmethod
    def _describe(prefix, reference, info):
        lines = [f"{prefix}: {reference}"]
        if info.get("version"):
            lines.append(f"  Version: {info['version']}")
        lines.append(f"  Digest: {info['digest']}")
        return "\n".join(lines) + "\n"

    async def cmd_upgrade(self, args):
        flags = self._flags(args, ("--check", "--apply", "--quiet", "--download-only", "--from-downloaded",
                                   "--soft-reboot"))
        check, apply = "--check" in flags, "--apply" in flags
        if check and apply:
            raise CommandError("error: the argument '--check' cannot be used with '--apply'", 2)
        if "--download-only" in flags and (apply or "--from-downloaded" in flags):
            raise CommandError("error: the argument '--download-only' cannot be used with '--apply'", 2)
        if "--soft-reboot" in flags and not apply:
            raise CommandError("error: the following required arguments were not provided: --apply", 2)
        state = self.state
        if not state.booted or not state.spec_image:
            raise CommandError("error: Upgrading: No image source specified")
        if "--from-downloaded" in flags:
            return self._from_downloaded(flags)
        if state.spec_signature == "containerPolicy":
            refusal = simruntime.container_policy_refusal(self)
            if refusal:
                raise CommandError(f"error: Upgrading: {refusal}")
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
        out = await self._stage(state.spec_image, info, download_only="--download-only" in flags)
        if apply and state.staged is not None:
            self._apply(flags)
        return out

    def _from_downloaded(self, flags):
        state = self.state
        if state.staged is None:
            # Wording not verified against bootc: there is nothing downloaded to apply.
            raise CommandError("error: Upgrading: No staged deployment downloaded (run bootc upgrade --download-only)")
        state.staged.download_only = False
        self._log("ostree-finalize-staged.service", f"Unlocked staged deployment {state.staged.digest}")
        self.changed()
        out = f"Staged update present, unlocked: {state.staged.image}\n"
        if "--apply" in flags:
            self._apply(flags)
        return out

    def _apply(self, flags):
        mode = flags.get("--soft-reboot", "")
        target = self.state.rollback if self.state.rollback_queued else self.state.staged
        soft = bool(mode) and target is not None and target.soft_reboot_capable
        if mode == "required" and not soft:
            raise CommandError("error: Soft reboot required but the target deployment is not soft-reboot capable")
        self.schedule_reboot(soft=soft)

    async def _stage(self, reference, info, *, download_only=False, signature=None, redeploy=False):
        """Stage `info`'s digest. `redeploy` (bootc switch to a new image specification) stages it even when it is the
        booted digest, as bootc's switch does: it compares specifications, not digests, then pulls and stages."""
        state = self.state
        if info["digest"] == state.booted.digest and state.staged is None and not redeploy:
            return "No update available.\n"
        if state.staged is not None and state.staged.digest == info["digest"]:
            if download_only or not state.staged.download_only:
                return "Staged update present, not changed.\n"
        if info["digest"] == state.booted.digest and not redeploy:
            state.staged = None  # going back to what is booted drops the staged entry
            state.rollback_queued = False
            self.changed()
            return "No update available.\n"
        if info["digest"] not in state.cached_layers:
            if self.faults["slow_download"]:
                await asyncio.sleep(float(self.faults["slow_download"]))
            if self.faults["disk_full"] or state.disk_free_bytes < IMAGE_BYTES:
                raise CommandError("error: Upgrading: Pulling: Importing: Unencapsulating base: writing object: "
                                   "No space left on device (os error 28)")
        state.staged = self._new_deployment(reference, info, download_only=download_only, signature=signature)
        state.rollback_queued = False
        with contextlib.suppress(ValueError):
            state.cached_layers.remove(info["digest"])
        self._log("ostree-finalize-staged.service", f"Staged deployment {info['digest']} for next boot"
                  + (" (download only: locked)" if download_only else ""))
        self.changed()
        return self._describe("Queued for next boot", reference, info) + "Total new layers: 1    Size: 1.2 kB\n"

    async def cmd_switch(self, args):
        targets = [a for a in args if not a.startswith("--")]
        flags = self._flags([a for a in args if a.startswith("--")],
                            ("--apply", "--quiet", "--retain", "--download-only", "--soft-reboot",
                             "--enforce-container-sigpolicy", "--mutate-in-place"))
        if len(targets) != 1:
            raise CommandError("error: Usage: bootc switch [OPTIONS] <TARGET>", 2)
        apply = "--apply" in flags
        if "--download-only" in flags and apply:
            raise CommandError("error: the argument '--download-only' cannot be used with '--apply'", 2)
        target = targets[0]
        state = self.state
        if not state.booted:
            raise CommandError("error: Switching: Not booted into a bootc deployment")
        if "--mutate-in-place" in flags:
            # bootc rewrites the booted deployment's origin (deploy::switch_origin_inplace): nothing pulled or staged.
            state.spec_image = target
            self.changed()
            return f"Updated {state.booted.digest.removeprefix('sha256:')[:12]}.0 to pull from {target}\n"
        signature = "containerPolicy" if "--enforce-container-sigpolicy" in flags else ""
        if target == state.spec_image and signature == state.spec_signature:
            return "Image specification is unchanged.\n"
        if signature:
            refusal = simruntime.container_policy_refusal(self)
            if refusal:
                # bootc's words after "error: "; the context before them is not verified against bootc.
                raise CommandError(f"error: Switching: {refusal}")
        info = await self._resolve(target)
        out = await self._stage(target, info, download_only="--download-only" in flags, signature=signature,
                                redeploy=True)
        state.spec_image = target
        state.spec_signature = signature
        state.cached_update = None
        self.changed()
        if apply and state.staged is not None:
            self._apply(flags)
        return out

    async def cmd_rollback(self, args):
        flags = self._flags(args, ("--apply", "--soft-reboot"))
        if "--apply" in flags and self.bootc_version < (1, 1, 7):
            raise unexpected("--apply")
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
        if "--apply" in flags and state.rollback_queued:
            self._apply(flags)
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

    def cmd_df(self, args):
        if args != ["--output=avail", "-B1", "/sysroot"]:
            raise CommandError("df: only `df --output=avail -B1 /sysroot` is simulated", 1)
        return f"   Avail\n{self.state.disk_free_bytes}\n"

    def deployments(self):
        """ostree's list of deployments, as `ostree admin pin INDEX` counts them: the staged one, then the one the next
        boot takes (the rollback when it is queued), the other of the two, then the pinned rest."""
        state = self.state
        order = [state.rollback, state.booted] if state.rollback_queued else [state.booted, state.rollback]
        return [entry for entry in [state.staged, *order, *state.other_deployments] if entry is not None]

    def cmd_pin(self, args):
        unpin = bool({"--unpin", "-u"} & set(args))
        indexes = [arg for arg in args if arg not in ("--unpin", "-u")]
        if len(indexes) != 1:
            raise CommandError("error: INDEX must be specified", 1)
        try:
            index = int(indexes[0])
        except ValueError:
            index = 0  # ostree reads the index with atoi()
        deployments = self.deployments()
        if index < 0:
            raise CommandError(f"error: Invalid index {index}")
        if index >= len(deployments):
            raise CommandError(f"error: Out of range deployment index {index}, expected < {len(deployments)}")
        deployment = deployments[index]
        if deployment.pinned != unpin:
            return f"Deployment is already {'unpinned' if unpin else 'pinned'}\n"
        if deployment is self.state.staged:
            raise CommandError("error: Cannot pin staged deployment")
        if self.faults["pin_fails"]:
            # Wording not verified against ostree: a pin rewrites the deployment's origin file under /sysroot.
            raise CommandError("error: Writing origin file: Read-only file system")
        deployment.pinned = not unpin
        self.changed()
        return f"Deployment is now {'unpinned' if unpin else 'pinned'}\n"

    def _pruned(self, dropped):
        """A deployment a new boot no longer needs: kept (in otherDeployments) when pinned; unpinned ones go."""
        others = [entry for entry in self.state.other_deployments if entry.pinned]
        if dropped is not None and dropped.pinned:
            others.append(dropped)
        self.state.other_deployments = others

    def _log(self, unit, text, boot_id=None):
        boot_id = boot_id or self.state.boot_id
        self.state.journal.append((boot_id, unit, f"{now_rfc3339()} {self.name} {unit.removesuffix('.service')}: {text}"))
        del self.state.journal[:-200]

    # --- rebooting ---

    def schedule_reboot(self, *, soft=False):
        if not self.rebooting:
            self.rebooting = True
            asyncio.get_running_loop().create_task(self._reboot(soft=soft))

    async def _reboot(self, *, soft=False):
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.05)  # let the command's exit status reach the client first
        went_down = loop.time()
        await self.stop()
        if self.faults["never_come_back"]:
            self.held_down = (went_down, soft)  # stays down (rebooting) until the fault is cleared: power_on()
            return
        await self._boot(went_down, soft=soft)

    def power_on(self):
        """A host held down by `never_come_back` boots now (its fault was cleared)."""
        if self.held_down is not None:
            went_down, soft = self.held_down
            self.held_down = None
            asyncio.get_running_loop().create_task(self._boot(went_down, soft=soft))

    async def _boot(self, went_down, *, soft):
        loop = asyncio.get_running_loop()
        attempts = self._boot_next(soft=soft)
        await asyncio.sleep(self.fleet.reboot_seconds * (0.25 if soft else 1) * attempts)
        self.state.last_downtime_seconds = round(loop.time() - went_down, 3)
        self.state.last_reboot_soft = soft
        self.changed()
        self.rebooting = False
        await self.start()

    def _boot_next(self, *, soft=False):
        """Boot the next entry; returns how many boots it took (a failing health check boots max_boot_attempts
        times before GRUB falls back)."""
        state = self.state
        previous = state.booted
        state.boot_id += 1
        simruntime.on_boot(self)
        attempts = 1
        if soft:
            self._log("systemd", "Soft-rebooting: userspace restarted, kernel kept")
        if state.staged is not None and state.staged.download_only:
            # A download-only entry is not applied by a reboot: it is dropped, and its layers stay cached.
            state.cached_layers = [*state.cached_layers, state.staged.digest][-10:]
            self._log("ostree-finalize-staged.service", f"Dropped download-only deployment {state.staged.digest}")
            state.staged = None
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
                attempts = max(1, state.max_boot_attempts)
                for counter in range(attempts - 1, -1, -1):
                    self._log("greenboot-healthcheck.service", "Script '00_required_check.sh' FAILURE (exit code '1')")
                    self._log("greenboot-healthcheck.service", f"greenboot health checks failed; boot_counter={counter}"
                              + (", rebooting to the previous deployment" if counter == 0 else ", rebooting"))
                    state.boot_id += 1
                new.will_fail_health_check = False
                self._pruned(state.rollback)
                state.booted, state.rollback = previous, new
                self._log("greenboot-rpm-ostree-grub2-check-fallback.service",
                          f"FALLBACK BOOT DETECTED! Default bootc deployment {new.digest} failed to boot; running "
                          "bootc rollback")
                self._log("bootc", "MESSAGE_ID=26f3b1eb24464d12aa5e7b544a6b5468 Rollback to "
                                   f"{previous.digest} made permanent")
                self.faults["fail_health_check"] = False
            else:
                self._pruned(state.rollback)
                state.booted, state.rollback = new, previous
                self._log("greenboot-healthcheck.service", "greenboot health checks passed")
                self._log("ostree-boot-complete.service", f"Booted {new.digest}")
        else:
            self._log("greenboot-healthcheck.service", "greenboot health checks passed")
        if state.cached_update and state.booted and state.cached_update.get("imageDigest") == state.booted.digest:
            state.cached_update = None
        self.changed()
        return attempts
