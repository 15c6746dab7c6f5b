"""The boot-test bed: real bootable images made from Debian's packages, built and pushed by the portal itself.

No bootc base image can be pulled here, so the session makes one: the busybox base plus a real kernel from Debian's
`linux-image-cloud-amd64` package at `/usr/lib/modules/<version>/vmlinuz`, where bootc images keep theirs
(`scripts/system-deps.sh test` extracts it to /var/cache/portal-tests, without installing the package). Definitions then
build `FROM` it with the portal's own pipeline (podman build, push to the loopback registry), each with a small
`/sbin/init` of its own: one that boots to a login prompt, one that panics, one that never finishes booting, one that
floods the console. A boot test boots what the registry holds for the digest, in real QEMU (KVM where /dev/kvm is
usable, TCG otherwise).

What is stood in for: the init (a busybox shell script instead of systemd) and the way the root file system reaches the
kernel (the image's files as the initramfs, instead of a disk made by bootc-image-builder and a bootloader): see
docs/boot-tests.md.

Its fixtures reach every test through tests/conftest.py's pytest_plugins.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.builds.fixtures import BASE_IMAGE, build_once
from tests.helpers import IN_CI, require_tool

BOOTABLE_BASE = "localhost/bootable-base:latest"
KERNEL_CACHE = Path(os.environ.get("PORTAL_TEST_KERNEL_DIR", "/var/cache/portal-tests"))


def _init(script: str) -> str:
    """A Containerfile step that makes `script` the image's /sbin/init (busybox's /sbin/init link is replaced, never
    written through)."""
    body = script.strip().replace("\\", "\\\\").replace("'", "'\\''").replace("\n", "\\n")
    return f"RUN mkdir -p /sbin && rm -f /sbin/init && printf '#!/bin/sh\\n{body}\\n' > /sbin/init && chmod 755 /sbin/init\n"


GOOD_INIT = """
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
echo "test-os: init started on $(uname -r)"
echo "test-os: services up"
printf 'test-os login: '
exec sleep 100000
"""
PANIC_INIT = """
echo "test-os: init started"
echo "test-os: cannot mount /sysroot, giving up"
exit 3
"""
HANG_INIT = """
echo "test-os: init started"
echo "test-os: waiting for a device that never comes"
exec sleep 100000
"""
FLOOD_INIT = """
echo "test-os: init started"
while true; do echo "test-os: reboot loop, printing the same line again and again and again"; done
"""


def containerfile(init: str, version: str = "1.0") -> str:
    return (f"FROM {BOOTABLE_BASE}\n" + _init(init)
            + f'LABEL containers.bootc=1 org.opencontainers.image.version="{version}"\n')


GOOD, PANIC, HANG, FLOOD = (containerfile(GOOD_INIT), containerfile(PANIC_INIT), containerfile(HANG_INIT),
                            containerfile(FLOOD_INIT))

# The image the checks log in to: the virtio network driver loaded, QEMU's user-mode address set by hand (no DHCP
# client needed), Debian's real sshd started, and the state the stand-in systemctl reports written once it is up.
SSH_INIT = """
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
mount -t sysfs sys /sys
mkdir -p /run && mount -t tmpfs run /run
echo "test-os: init started on $(uname -r)"
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net
do insmod /usr/lib/modules/$(uname -r)/kernel/$m.ko; done
ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
mkdir -p /run/sshd && /usr/sbin/sshd && echo "test-os: sshd started"
echo running > /run/system-state
printf 'test-os login: '
exec sleep 100000
"""
SSH_BASE = "localhost/bootable-ssh-base:latest"
SSH_GOOD = f"FROM {SSH_BASE}\n" + _init(SSH_INIT) + 'LABEL containers.bootc=1 org.opencontainers.image.version="1.0"\n'

# Stand-ins for what a busybox init lacks, said plainly (docs/boot-tests.md): `bootc status` prints the BootcHost
# document of the deployment this root file system was installed as, read from the deployment record the installer
# (here the boot test) wrote, as bootc reads ostree's; `systemctl is-system-running` prints the state the init wrote.
STANDIN_BOOTC = r"""#!/bin/sh
record=/ostree/deploy/default/deploy/portal-boottest.origin
if [ "$1" != status ]; then echo "error: this stand-in bootc only knows status" >&2; exit 1; fi
ref=$(sed -n 's/^container-image-reference=ostree-unverified-registry://p' "$record" 2>/dev/null)
digest=$(sed -n 's/^manifest-digest=//p' "$record" 2>/dev/null)
if [ -z "$digest" ]; then echo "error: no deployment record at $record" >&2; exit 1; fi
head='{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","metadata":{"name":"host"},"spec":{"bootOrder":"default",'
image='{"image":"%s","transport":"registry"}'
booted='{"image":{"image":'"$image"',"imageDigest":"%s","architecture":"amd64"},"incompatible":false,"pinned":false,'
booted="$booted"'"store":"ostreeContainer"}'
fmt="$head"'"image":'"$image"'},"status":{"booted":'"$booted"',"rollback":null,"rollbackQueued":false,"staged":null,'
printf "$fmt"'"type":"bootcHost"}}\n' "${ref%@*}" "${ref%@*}" "$digest"
"""
STANDIN_SYSTEMCTL = r"""#!/bin/sh
if [ "$1" != is-system-running ]; then echo "this stand-in systemctl only knows is-system-running" >&2; exit 1; fi
state=$(cat /run/system-state 2>/dev/null || echo starting)
echo "$state"
[ "$state" = running ]
"""
SSHD_CONFIG = """Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
"""
SSH_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover",
               "net_failover", "virtio_net")


def debian_kernel() -> tuple[Path, str]:
    """(vmlinuz, version) from Debian's kernel package, as scripts/system-deps.sh test leaves it."""
    kernel, version = KERNEL_CACHE / "vmlinuz", KERNEL_CACHE / "version"
    if not kernel.is_file() or not version.is_file():
        message = (f"no test kernel at {kernel}: `scripts/system-deps.sh test` extracts one from Debian's "
                   "linux-image-cloud-amd64")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return kernel, version.read_text().strip()


class ConsoleLog:
    """What the console watch writes to in place of a run's log: the lines, in a list."""

    def __init__(self):
        self.lines = []

    def log(self, line):
        self.lines.append(line)

    def poll(self):
        pass


@pytest.fixture(scope="session")
def bootable_base(podman_store):
    """localhost/bootable-base:latest in the session's podman store: busybox and a real Debian kernel."""
    require_tool("qemu-system-x86_64")
    kernel, version = debian_kernel()
    context = Path(tempfile.mkdtemp(prefix="portal-bootable-base-"))
    try:
        shutil.copy2(kernel, context / "vmlinuz")
        (context / "Containerfile").write_text(
            f"FROM {BASE_IMAGE}\nCOPY vmlinuz /usr/lib/modules/{version}/vmlinuz\nLABEL containers.bootc=1\n")
        podman_store.run("build", "--pull=never", "--tag", BOOTABLE_BASE, str(context))
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return BOOTABLE_BASE


@pytest.fixture(scope="session")
def bootable_ssh_base(podman_store, bootable_base):
    """localhost/bootable-ssh-base:latest: the bootable base plus Debian's sshd with the libraries it links (taken
    from this machine's openssh-server, about 15 MB), the kernel's virtio network modules, and the stand-in `bootc` and
    `systemctl`. Its own image, so the images that are not logged in to stay small (every boot unpacks its files)."""
    require_tool("sshd")
    _, version = debian_kernel()
    modules = KERNEL_CACHE / "modules"
    if not (modules / "virtio_net.ko").is_file():
        message = f"no virtio modules in {modules}: `scripts/system-deps.sh test` extracts them with the test kernel"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    build_ssh_base(podman_store.run, version)
    return SSH_BASE


def build_ssh_base(podman_run, kernel_version: str) -> None:
    """Build SSH_BASE FROM BOOTABLE_BASE with `podman_run(*args)` (the fixture's store, or bench/boottest's)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    context = Path(tempfile.mkdtemp(prefix="portal-bootable-ssh-base-"))
    try:
        root = context / "root"
        for path in [sshd, *_libraries(sshd)]:
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(path).resolve(), target)
        kernel_modules = root / "usr/lib/modules" / kernel_version / "kernel"
        kernel_modules.mkdir(parents=True)
        for name in SSH_MODULES:
            shutil.copy2(KERNEL_CACHE / "modules" / f"{name}.ko", kernel_modules / f"{name}.ko")
        for path, text, mode in (("usr/bin/bootc", STANDIN_BOOTC, 0o755), ("usr/bin/systemctl", STANDIN_SYSTEMCTL, 0o755),
                                 ("etc/ssh/sshd_config", SSHD_CONFIG, 0o644)):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
            (root / path).chmod(mode)
        (context / "Containerfile").write_text(
            f"FROM {BOOTABLE_BASE}\nCOPY root/ /\n"
            "RUN echo 'sshd:x:100:65534:sshd privilege separation:/run/sshd:/bin/false' >> /etc/passwd "
            "&& grep -q '^nogroup:' /etc/group || echo 'nogroup:x:65534:' >> /etc/group\n"
            "LABEL containers.bootc=1\n")
        podman_run("build", "--pull=never", "--tag", SSH_BASE, str(context))
    finally:
        shutil.rmtree(context, ignore_errors=True)


def _libraries(binary: str) -> list[str]:
    """The shared libraries `binary` links, and the dynamic loader, as this machine's ldd finds them."""
    import subprocess

    output = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout  # noqa: S603,S607
    found = []
    for line in output.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1 and parts[parts.index("=>") + 1].startswith("/"):
            found.append(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            found.append(parts[0])
    return found


@pytest.fixture
def boot_settings(settings, tmp_path, in_process_worker):
    """Boot tests in this process (the boot-test queue has a consumer, this test), with the VMs' files in the test's
    own directory and CI-sized limits: seconds, not minutes."""
    settings.BOOT_TEST_WORK_DIR = str(tmp_path / "vms")
    # TCG unless told otherwise: on the project's machines /dev/kvm exists, but QEMU 7.2 under KVM stops right after
    # the kernel's setup code ("Probing EDD ... ok") with Debian's 6.1 kernel; CI with working KVM sets auto or kvm.
    settings.BOOT_TEST_ACCEL = os.environ.get("PORTAL_TEST_BOOT_ACCEL", "tcg")
    settings.BOOT_TEST_BOOT_SECONDS = 120
    settings.BOOT_TEST_SOAK_SECONDS = 0  # a test of the soak time sets its own
    settings.BOOT_TEST_MEMORY_MB = 256
    settings.BOOT_TEST_CONSOLE_MAX_BYTES = 256 * 1024
    settings.BOOT_TEST_CHECK_SECONDS = 90
    settings.BUILD_CANCEL_POLL_SECONDS = 0.5
    in_process_worker(settings.BOOT_TEST_QUEUE)
    return settings


@pytest.fixture
def build_image(personas, oci_registry, local_builder, build_settings, bootable_base, pipeline_images):
    """build_image(containerfile, name=...) -> a succeeded build of a definition of the personas' team, pushed to the
    loopback registry by the portal's own build pipeline (once per session for each Containerfile: `build_once`)."""
    from builds import services

    def build(text, name="test-os"):
        definition = services.definition_create(team=personas.team, user=personas.developer, name=name)
        revision = services.revision_create(definition=definition, user=personas.developer, containerfile=text)
        return build_once(pipeline_images, revision, personas.developer)

    return build
