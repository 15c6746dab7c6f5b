"""QEMU, behind one small module: the argument list of a throwaway boot-test VM, and the watch over its serial console
that turns a boot into a verdict.

The VM boots the image's own kernel with its root file system as the initramfs (`bootmedia`), with KVM when the worker
may use /dev/kvm and TCG otherwise, BIOS (SeaBIOS) or UEFI (OVMF) firmware, memory and CPU limits, no disk at all (so
nothing of the artifact can change), and QEMU's user-mode network with `restrict=on`: the guest reaches nothing
outside QEMU. Its serial console is QEMU's stdout; every line goes to the run's log as it comes.

A boot passes when a line (or the prompt being printed, which has no newline yet) matches the marker before the boot
deadline and, through the soak time after it, no failure pattern shows. A kernel panic or an emergency shell fails it
at once (after a moment to catch the lines that explain it), as do a QEMU that exits first, a console flood, a marker
that uses up its time matching (`bootmarker`), and the deadline. Whatever ends the boot, the VM's whole process tree
is killed before `boot` returns or raises.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import select
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from builds.runner import _set_parent_death_signal, kill_tree
from portal.logsink import LineSplitter

from . import bootmarker

QEMU = "qemu-system-x86_64"
SELECT_SECONDS = 0.1
AFTER_FAILURE_SECONDS = 1.0  # keep reading this long after a panic line: the lines after it say why
TAIL_LINES = 30
FAILURE_CONTEXT = (6, 6)  # lines kept before (with) and after the line that failed the boot: a panic's trace is long
VM_NAME_PREFIX = "portal-boottest-"

# What fails a boot at once, and what the verdict calls it.
FAILURE_PATTERNS = (
    (re.compile(r"Kernel panic - not syncing"), "The kernel panicked"),
    (re.compile(r"You are in emergency mode|Entering emergency mode|Give root password for maintenance"),
     "The boot ended in an emergency shell"),
    (re.compile(r"Dropping to debug shell|dracut-emergency"), "The boot ended in the initramfs's emergency shell"),
)


class QemuError(Exception):
    """The VM cannot be started as configured (no QEMU, no KVM when KVM is required, firmware missing)."""


@dataclass(frozen=True)
class VMConfig:
    name: str  # the VM's name, which carries the run's id: the reaper finds leftovers by it
    kernel: Path
    initramfs: Path
    accel: str  # "kvm" or "tcg"
    firmware: str  # "bios" or "uefi"
    memory_mb: int
    cpus: int
    append: str
    ovmf_code: str = ""
    ovmf_vars: str = ""
    hostfwd: str = ""  # "tcp:127.0.0.1:PORT-:22" when the checks log in over SSH: loopback only


@dataclass
class Verdict:
    passed: bool
    reason: str
    tail: list[str] = field(default_factory=list)
    boot_seconds: float | None = None  # from QEMU's start to the marker
    console_bytes: int = 0
    checks: list[dict] = field(default_factory=list)  # what the checks over SSH found, round by round


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise QemuError(f"{QEMU} is not installed on this worker (Debian: apt-get install qemu-system-x86)")
    return path


def kvm_unusable_reason(cpuinfo: str | None = None) -> str:
    """Why KVM cannot run on this worker ("" when it can): /dev/kvm missing or not the worker's to use, or a CPU
    without the virtualization flag (vmx or svm). A VM host may hand its guests a /dev/kvm whose CPU shows neither
    flag: QEMU then starts under KVM and the guest stops in the kernel's setup code (seen on the project's machines)."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm is missing"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by the worker"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    if flags and not flags & {"vmx", "svm"}:
        return "/dev/kvm exists but the CPU shows no vmx or svm flag, so KVM cannot run here"
    return ""


def kvm_usable() -> bool:
    return not kvm_unusable_reason()


def pick_accelerator(setting: str) -> str:
    """"kvm" or "tcg" for BOOT_TEST_ACCEL ("auto" takes KVM when it can run on this worker)."""
    setting = (setting or "auto").lower()
    if setting not in ("auto", "kvm", "tcg"):
        raise QemuError(f"BOOT_TEST_ACCEL is {setting!r}; it must be auto, kvm or tcg")
    if setting == "kvm" and (why := kvm_unusable_reason()):
        raise QemuError(f"BOOT_TEST_ACCEL=kvm but {why}; set it to auto or tcg to boot without KVM (slower)")
    if setting == "auto":
        return "kvm" if kvm_usable() else "tcg"
    return setting


def check_firmware(firmware: str, ovmf_code: str) -> None:
    if firmware not in ("bios", "uefi"):
        raise QemuError(f"BOOT_TEST_FIRMWARE is {firmware!r}; it must be bios or uefi")
    if firmware == "uefi" and not (ovmf_code and Path(ovmf_code).is_file()):
        raise QemuError(f"the UEFI firmware BOOT_TEST_OVMF_CODE={ovmf_code or '(unset)'} is missing (Debian: apt-get "
                        "install ovmf), or set BOOT_TEST_FIRMWARE=bios")


def args(config: VMConfig, *, qemu: str = QEMU) -> list[str]:
    """The full argument list of the VM (never a shell string)."""
    argv = [qemu, "-name", config.name, "-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-accel", config.accel, "-cpu", "host" if config.accel == "kvm" else "max",
            "-m", str(config.memory_mb), "-smp", str(config.cpus),
            "-netdev", "user,id=net0,restrict=on" + (f",hostfwd={config.hostfwd}" if config.hostfwd else ""),
            "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-kernel", str(config.kernel), "-initrd", str(config.initramfs), "-append", config.append]
    if config.firmware == "uefi":
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={config.ovmf_code}"]
        if config.ovmf_vars:
            argv += ["-drive", f"if=pflash,format=raw,unit=1,file={config.ovmf_vars}"]
    return argv


def vm_name(run_id: int) -> str:
    return f"{VM_NAME_PREFIX}{run_id}"


def run_id_of(name: str) -> int | None:
    """The run id in a VM's name or its work directory's (portal-boottest-<run id>[-suffix])."""
    if not name.startswith(VM_NAME_PREFIX):
        return None
    head = name[len(VM_NAME_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def vms_under(work_parent: Path) -> list[tuple[int, int]]:
    """(pid, run id) of the boot-test VMs on this machine whose files are in `work_parent`: only VMs of this
    installation (another one's, with its own work directory, is left alone)."""
    prefix = str(work_parent / VM_NAME_PREFIX)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(QEMU) or "-kernel" not in argv:
            continue
        kernel = argv[argv.index("-kernel") + 1] if argv.index("-kernel") + 1 < len(argv) else ""
        if kernel.startswith(prefix):
            run_id = run_id_of(Path(kernel).parent.name)
            if run_id is not None:
                found.append((int(entry), run_id))
    return found


def stop_vm(pid: int) -> None:
    kill_tree(pid)


def boot(argv: list[str], *, watch, marker: bootmarker.Marker, boot_seconds: float, soak_seconds: float,
         max_console_bytes: int, checks=None) -> Verdict:
    """Start the VM, stream its console into `watch.log`, and decide. `watch.poll()` (cancel, the run's time limit)
    is called all along and may raise; the VM is killed whatever happens.

    `checks(round_number, log)`, when given, runs in a thread of its own once the marker shows (round 1) and again at
    the end of the soak time (round 2), while the console goes on streaming; it returns something with `passed`,
    `reason` and `results`, and the first round that fails fails the boot."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, preexec_fn=_set_parent_death_signal)  # noqa: PLW1509
    except OSError as exc:
        raise QemuError(f"{argv[0]} could not be started: {exc}") from None
    console = Console(watch, marker=marker, max_bytes=max_console_bytes)
    try:
        return console.follow(process, started=started, boot_deadline=started + boot_seconds,
                              soak_seconds=soak_seconds, rounds=CheckRounds(checks, soak_seconds) if checks else None)
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
        process.wait()
        process.stdout.close()
        process.stderr.close()


class Console:
    """The serial console of one boot: lines to the log, the last ones kept, markers and failures looked for."""

    def __init__(self, watch, *, marker: bootmarker.Marker, max_bytes: int):
        self.watch, self.marker, self.max_bytes = watch, marker, max_bytes
        self.splitter = LineSplitter()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.stderr: collections.deque[str] = collections.deque(maxlen=10)
        self.partial = b""  # the line being printed (a login prompt ends without a newline)
        self.bytes = 0
        self.failure_lines: list[str] | None = None  # around the line that failed the boot, once one did

    def _take(self, data: bytes) -> list[str]:
        self.bytes += len(data)
        lines = self.splitter.feed(data)
        for line in lines:
            self.watch.log(line)
            self.tail.append(line)
            if self.failure_lines is not None and len(self.failure_lines) < sum(FAILURE_CONTEXT):
                self.failure_lines.append(line)
        self.partial = (self.partial + data).replace(b"\r", b"\n").rsplit(b"\n", 1)[-1][-512:]
        return lines

    def _failure(self, lines: list[str]) -> str:
        """The label of the first line that fails the boot, keeping the lines around it for the verdict."""
        for number, line in enumerate(lines):
            for pattern, label in FAILURE_PATTERNS:
                if pattern.search(line):
                    # The tail already holds this read's lines (all of them, or its last TAIL_LINES of a big read).
                    earlier = list(self.tail)[:-len(lines)] if len(lines) < len(self.tail) else []
                    before = (earlier + lines[:number + 1])[-FAILURE_CONTEXT[0]:]
                    self.failure_lines = before + lines[number + 1:][:FAILURE_CONTEXT[1]]
                    return label
        return ""

    def _verdict(self, passed, reason, started, marker_at=None, checks=None):
        rest = self.splitter.rest()
        for line in rest:
            self.watch.log(line)
            self.tail.append(line)
        tail = self.failure_lines if self.failure_lines is not None and not passed else list(self.tail)
        return Verdict(passed=passed, reason=reason, tail=tail, console_bytes=self.bytes, checks=checks or [],
                       boot_seconds=None if marker_at is None else round(marker_at - started, 2))

    def follow(self, process, *, started, boot_deadline, soak_seconds, rounds=None) -> Verdict:
        streams = {process.stdout.fileno(): "out", process.stderr.fileno(): "err"}
        open_fds = set(streams)
        err_splitter = LineSplitter()
        marker_at = None
        failed, fail_by = "", None
        while True:
            now = time.monotonic()
            if failed and (now >= fail_by or not open_fds):
                return self._verdict(False, f"{failed}.", started, marker_at)
            if marker_at is not None and rounds is not None:
                for line in rounds.lines():
                    self.watch.log(line)
                decided = rounds.decide(now, soak_until=marker_at + soak_seconds)
                if decided is not None:
                    passed, why = decided
                    reason = why if not passed else (f"Booted to the marker in {marker_at - started:.1f} s{why}.")
                    return self._verdict(passed, reason, started, marker_at, checks=rounds.results)
            elif marker_at is not None and now >= marker_at + soak_seconds:
                soak = f", and stayed up {soak_seconds:g} s" if soak_seconds else ""
                return self._verdict(True, f"Booted to the marker in {marker_at - started:.1f} s{soak}.", started,
                                     marker_at)
            if marker_at is None and now >= boot_deadline:
                return self._verdict(False, f"The boot did not reach the marker within {boot_deadline - started:g} s "
                                            "(BOOT_TEST_BOOT_SECONDS).", started)
            if not open_fds:
                try:
                    code = process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = "none: it closed its console"
                why = f"; QEMU said: {' / '.join(self.stderr)}" if self.stderr else ""
                when = "before the boot reached the marker" if marker_at is None else "during the soak time"
                return self._verdict(False, f"The VM stopped (QEMU exit code {code}) {when}{why}.", started, marker_at)
            ready, _, _ = select.select(list(open_fds), [], [], SELECT_SECONDS)
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    open_fds.discard(fd)
                    if streams[fd] == "err":
                        self.stderr.extend(err_splitter.rest())
                    continue
                if streams[fd] == "err":
                    for line in err_splitter.feed(data):
                        self.stderr.append(line)
                        self.watch.log(f"qemu: {line}")
                    continue
                lines = self._take(data)
                if self.bytes > self.max_bytes:
                    return self._verdict(False, f"The console printed more than {self.max_bytes // 1024} KiB "
                                                "(BOOT_TEST_CONSOLE_MAX_BYTES), a boot loop or a flood; the VM was "
                                                "stopped.", started, marker_at)
                if not failed:
                    failed = self._failure(lines)
                    if failed:
                        fail_by = time.monotonic() + AFTER_FAILURE_SECONDS
                try:
                    reached = marker_at is None and not failed and (
                        any(self.marker.search(line) for line in lines) or self.marker.search(
                            self.partial.decode(errors="replace")))
                except bootmarker.MarkerTooSlow as exc:
                    return self._verdict(False, str(exc), started)
                if reached:
                    marker_at = time.monotonic()
                    self.watch.log(f"boot test: the console reached the marker ({self.marker.pattern}) after "
                                   f"{marker_at - started:.1f} s" + (f"; soaking {soak_seconds:g} s" if soak_seconds
                                                                     else ""))
                    if rounds is not None:
                        rounds.start()
            self.watch.poll()


class CheckRounds:
    """The checks of one boot, in a thread of their own so the console keeps streaming: round 1 when the marker
    shows, round 2 (with a soak time) once the VM has stayed up that long. Lines they log are handed to the console's
    loop, which writes them to the run's log (the log sink is written from one thread only)."""

    def __init__(self, checks, soak_seconds):
        self.checks, self.soak_seconds = checks, soak_seconds
        self.wanted = 2 if soak_seconds else 1
        self.started = self.passed = 0  # rounds
        self.results: list[dict] = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._outcome = None

    def start(self):
        self.started += 1
        self._outcome = None
        self._thread = threading.Thread(target=self._run, args=(self.started,), daemon=True,
                                        name=f"boot-test-checks-{self.started}")
        self._thread.start()

    def _run(self, number):
        self._queue.put(f"boot test: checks over SSH, round {number} of {self.wanted}")
        try:
            self._outcome = self.checks(number, self._queue.put)
        except Exception as exc:  # noqa: BLE001 - a check that breaks fails the boot with what broke
            self._outcome = _Broken(f"The checks over SSH broke: {exc}")

    def lines(self):
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def decide(self, now, *, soak_until):
        """None while undecided; else (passed, the verdict's reason, or for a pass what to add to it)."""
        if self._thread is not None:
            if self._thread.is_alive():
                return None
            self._thread, outcome = None, self._outcome
            self.results.extend(outcome.results)
            if not outcome.passed:
                return False, outcome.reason
            self.passed += 1
        if self.passed < self.wanted:
            if now >= soak_until:
                self.start()
            return None
        checked = sum(1 for result in self.results if result["round"] == 1)
        if self.wanted == 1:
            return True, f", and passed {checked} checks over SSH"
        return True, (f", passed {checked} checks over SSH, and stayed up {self.soak_seconds:g} s with them "
                      "passing again")


@dataclass
class _Broken:
    reason: str
    passed: bool = False
    results: list = field(default_factory=list)
