"""What a boot test boots is made from the image's own layers: whiteouts applied as podman applies them, the kernel
found where bootc images keep it, the root file system written as a newc cpio archive that busybox's cpio (a real
reader) lists; and the VM's command line is the throwaway one the design asks for."""

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from builds.diskimages import bootmedia, qemu
from tests.diskimages.bootimages import ConsoleLog
from tests.helpers import require_tool

KERNEL = b"\0" * 0x202 + b"HdrS" + b"\0" * 64  # a bzImage header, as far as the check looks


def layer(path: Path, files: dict[str, bytes | str | None]):
    """A gzip tar layer: bytes are files, str are symlinks, None a directory."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return path


def image_dir(tmp_path, *layers_files):
    directory = tmp_path / "image"
    directory.mkdir()
    manifest = {"schemaVersion": 2, "layers": []}
    for number, files in enumerate(layers_files):
        hexdigest = f"{number:064x}"
        layer(directory / hexdigest, files)
        manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": f"sha256:{hexdigest}"})
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_layers_flatten_with_whiteouts_and_opaque_directories(tmp_path):
    directory = image_dir(
        tmp_path,
        {"etc": None, "etc/motd": b"old\n", "etc/gone": b"x", "opt": None, "opt/a": b"a", "bin": None,
         "bin/sh": "busybox", "bin/busybox": b"\x7fELF"},
        {"etc/.wh.gone": b"", "opt/.wh..wh..opq": b"", "opt/b": b"b", "etc/motd": b"new\n"},
    )
    entries = bootmedia.flatten(bootmedia.layers_of(directory), max_bytes=1 << 20)
    assert entries["etc/motd"].data == b"new\n"
    assert "etc/gone" not in entries
    assert "opt/a" not in entries and entries["opt/b"].data == b"b"
    assert entries["bin/sh"].kind == stat.S_IFLNK and entries["bin/sh"].data == b"busybox"


def test_the_kernel_is_found_where_bootc_images_keep_it_and_the_rest_becomes_a_cpio_busybox_reads(tmp_path):
    require_tool("busybox")
    directory = image_dir(tmp_path, {"usr": None, "usr/lib": None, "usr/lib/modules": None,
                                     "usr/lib/modules/6.1.0-test": None, "usr/lib/modules/6.1.0-test/vmlinuz": KERNEL,
                                     "sbin": None, "sbin/init": b"#!/bin/sh\necho hi\n"})
    work = tmp_path / "work"
    work.mkdir()
    media = bootmedia.prepare(directory, work, max_bytes=1 << 20)
    assert media.kernel_version == "6.1.0-test"
    assert media.kernel.read_bytes() == KERNEL
    listing = subprocess.run(["busybox", "cpio", "-t"], stdin=media.initramfs.open("rb"), capture_output=True,
                             text=True, check=True).stdout.split()
    assert "sbin/init" in listing and "dev/console" in listing and "proc" in listing
    assert "usr/lib/modules/6.1.0-test/vmlinuz" not in listing  # the kernel is passed to QEMU, not copied twice
    assert listing.index("sbin") < listing.index("sbin/init")


@pytest.mark.parametrize("files, message", [
    ({"sbin": None, "sbin/init": b"x"}, "has no kernel at /usr/lib/modules/<version>/vmlinuz"),
    ({"usr/lib/modules/6.1/vmlinuz": b"not a kernel at all"}, "is not a Linux kernel image"),
])
def test_an_image_without_a_real_kernel_is_refused_with_the_reason(tmp_path, files, message):
    directory = image_dir(tmp_path, files)
    with pytest.raises(bootmedia.BootMediaError, match=message.replace("<", ".").replace(">", ".")):
        bootmedia.prepare(directory, tmp_path, max_bytes=1 << 20)


def test_a_layer_that_is_not_a_tar_archive_and_an_image_too_big_for_memory_are_refused(tmp_path):
    directory = image_dir(tmp_path, {"big": b"x" * 4096})
    with pytest.raises(bootmedia.BootMediaError, match="BOOT_TEST_ROOTFS_MAX_BYTES"):
        bootmedia.prepare(directory, tmp_path, max_bytes=1024)
    (directory / f"{0:064x}").write_bytes(b"QFI\xfb this is a qcow2 header, not a layer")
    with pytest.raises(bootmedia.BootMediaError, match="is not a tar archive"):
        bootmedia.prepare(directory, tmp_path, max_bytes=1 << 20)


def test_the_vm_is_throwaway_restricted_and_named_after_its_run(tmp_path):
    config = qemu.VMConfig(name=qemu.vm_name(42), kernel=tmp_path / "portal-boottest-42-x" / "vmlinuz",
                           initramfs=tmp_path / "rootfs.cpio", accel="tcg", firmware="bios", memory_mb=256, cpus=1,
                           append="console=ttyS0")
    argv = qemu.args(config)
    assert argv[argv.index("-name") + 1] == "portal-boottest-42"
    assert "user,id=net0,restrict=on" in argv  # the guest reaches nothing outside QEMU
    assert "-no-reboot" in argv and "-drive" not in argv  # no disk: nothing of the artifact can change
    assert argv[argv.index("-accel") + 1] == "tcg" and argv[argv.index("-m") + 1] == "256"
    assert qemu.run_id_of("portal-boottest-42-abcd") == 42 and qemu.run_id_of("other-42") is None


def test_the_checks_reach_the_vm_through_a_forward_on_loopback_only(tmp_path):
    config = qemu.VMConfig(name=qemu.vm_name(42), kernel=tmp_path / "vmlinuz", initramfs=tmp_path / "rootfs.cpio",
                           accel="tcg", firmware="bios", memory_mb=256, cpus=1, append="console=ttyS0",
                           hostfwd="tcp:127.0.0.1:40022-:22")
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22" in qemu.args(config)


def test_kvm_is_not_taken_where_the_cpu_shows_no_virtualization_flag():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm on this machine: the flag is not looked at")
    without = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae sse sse2 hypervisor\n"
    assert "no vmx or svm flag" in qemu.kvm_unusable_reason(without)
    assert qemu.kvm_unusable_reason(without.replace("hypervisor", "hypervisor vmx")) == ""


def test_the_guest_files_carry_the_runs_keys_and_the_deployment_record(tmp_path):
    from builds.diskimages import vmaccess

    access = vmaccess.GuestAccess.make(42)
    files = access.guest_files(image_reference="127.0.0.1:5000/t/os@sha256:" + "a" * 64, digest="sha256:" + "b" * 64)
    assert files["root/.ssh/authorized_keys"] == (0o600, (access.client_public + "\n").encode())
    assert files["etc/ssh/ssh_host_ed25519_key"][0] == 0o600
    assert b"manifest-digest=sha256:" + b"b" * 64 in files[vmaccess.DEPLOYMENT_RECORD][1]
    entries = {}
    bootmedia.add_files(entries, files)
    assert entries["root/.ssh"].mode == 0o700 and entries["root"].mode == 0o755
    assert access.target(timeout=30).host_key.split()[1] in access.host_public  # pinned: no "accept any key"


def test_missing_uefi_firmware_and_a_wrong_accelerator_setting_say_what_to_do():
    with pytest.raises(qemu.QemuError, match="BOOT_TEST_OVMF_CODE=/nowhere/OVMF_CODE.fd is missing"):
        qemu.check_firmware("uefi", "/nowhere/OVMF_CODE.fd")
    with pytest.raises(qemu.QemuError, match="must be auto, kvm or tcg"):
        qemu.pick_accelerator("hvf")
    assert qemu.pick_accelerator("tcg") == "tcg"


def test_the_lines_around_a_panic_are_kept_even_when_one_read_brings_hundreds_of_lines():
    import re

    console = qemu.Console(ConsoleLog(), marker=re.compile("login: $"), max_bytes=1 << 20)
    burst = [f"[    0.{n:06d}] early line {n}" for n in range(200)]
    burst[150] = "[    2.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300"
    lines = console._take(("\n".join(burst) + "\n").encode())
    assert console._failure(lines) == "The kernel panicked"
    assert console.failure_lines == burst[145:157]
