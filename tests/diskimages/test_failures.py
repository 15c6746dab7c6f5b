"""Why a conversion failed, named for the common causes, and the format checks of what the builder wrote.

The lines are what bootc-image-builder, osbuild, podman and the kernel print in those cases (bib's own messages come
from bib/internal/setup/setup.go and buildconfig; the end-to-end tests cover a real full disk and a missing digest).
"""

import json
import subprocess
from pathlib import Path

import pytest

from builds.diskimages import converters, diskconfig
from builds.diskimages.converters import Cause, FormatMismatch, classify_failure
from tests.helpers import require_tool


@pytest.mark.parametrize("lines, cause", [
    (["Image building step", "org.osbuild.copy: 3f0c {", "cp: error writing '/run/osbuild/tree/sysroot': No space left "
      "on device", "Error: cannot run osbuild: exit status 1"], Cause.DISK_FULL),
    (["Generating manifest manifest-qcow2.json", "error: exec /usr/bin/bootc: exec format error"], Cause.ARCH_MISMATCH),
    (["Error: cannot build manifest: image architecture arm64 does not match the target arch x86_64"],
     Cause.ARCH_MISMATCH),
    (["error: this command requires a privileged container"], Cause.PRIVILEGES),
    (["error: this command must be run in rootful (not rootless) podman"], Cause.PRIVILEGES),
    (['Error: could not access container storage, did you forget -v /var/lib/containers/storage:/var/lib/containers/'
      'storage? (cannot find mount for "/var/lib/containers/storage")'], Cause.PRIVILEGES),
    (["Error: cannot build manifest: failed to inspect the image: quay.io/x/y@sha256:abc: image not known"],
     Cause.IMAGE_NOT_FOUND),
    (["Error: reading manifest sha256:00 in 127.0.0.1:5000/p/web-os: manifest unknown"], Cause.IMAGE_NOT_FOUND),
    (["error: unknown keys found: [birds birds.name]"], Cause.CONFIG),
    (['error: cannot load config: json: unknown field "birds"'], Cause.CONFIG),
    (['the following errors occurred while validating custom mountpoints:', 'path "/ostree" is not allowed'],
     Cause.CONFIG),
    (['blueprint validation failed for image type "qcow2": customizations.installer: not supported'], Cause.CONFIG),
    (["something odd happened", "Error: exit status 3"], Cause.OTHER),
])
def test_the_common_causes_are_named(lines, cause):
    failure = classify_failure(["$ podman run ...", *lines])
    assert failure.cause == cause, failure
    assert failure.summary
    assert failure.label == converters.CAUSE_LABELS[cause]
    if cause != Cause.OTHER:
        assert failure.hint


def test_a_builder_image_that_cannot_be_pulled_is_not_blamed_on_the_source():
    lines = ["Trying to pull quay.io/centos-bootc/bootc-image-builder:latest...",
             "Error: initializing source docker://quay.io/centos-bootc/bootc-image-builder:latest: pinging container "
             "registry quay.io: dial tcp: lookup quay.io: no such host"]
    failure = classify_failure(lines, builder_image="quay.io/centos-bootc/bootc-image-builder:latest")
    assert failure.cause == Cause.BUILDER_IMAGE
    assert "could not be pulled" in failure.hint


def test_the_summary_is_the_line_that_says_so_not_the_last_line():
    failure = classify_failure(["write /output/image/disk.raw: no space left on device", "Error: exit status 1",
                                "cleanup done"])
    assert failure.summary == "write /output/image/disk.raw: no space left on device"


# --- Format checks ---------------------------------------------------------------------------------------------------


def qemu_img_info(path):
    return subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("image_type, fmt", [("qcow2", "qcow2"), ("vmdk", "vmdk"), ("vhd", "vpc"), ("raw", "raw")])
def test_qemu_img_says_what_a_disk_is(tmp_path, image_type, fmt):
    require_tool("qemu-img")
    path = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "64M"], check=True)
    facts = converters.check_qemu_img(image_type, qemu_img_info(path))
    assert facts["format"] == fmt and 64 * 1024**2 <= facts["virtual_size"] < 65 * 1024**2  # vpc rounds to CHS


def test_a_file_of_another_format_at_a_types_path_is_refused(tmp_path):
    require_tool("qemu-img")
    path = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "1M"], check=True)
    with pytest.raises(FormatMismatch, match="qcow2/disk.qcow2 is raw, not qcow2"):
        converters.check_qemu_img("qcow2", qemu_img_info(path))
    with pytest.raises(FormatMismatch, match="no JSON"):
        converters.check_qemu_img("qcow2", "qemu-img: Could not open 'x'")


def test_a_raw_disk_needs_a_partition_table():
    with pytest.raises(FormatMismatch, match="no partition table"):
        converters.check_signature("raw", b"\0" * 4096)
    mbr = bytearray(4096)
    mbr[510:512] = b"\x55\xaa"
    assert converters.check_signature("raw", bytes(mbr)) == {"partition_table": "dos"}
    mbr[512:520] = b"EFI PART"
    assert converters.check_signature("ami", bytes(mbr)) == {"partition_table": "gpt"}


def test_an_iso_is_checked_with_xorriso_and_its_volume_descriptor(tmp_path):
    require_tool("xorriso")
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot" / "boot.img").write_bytes(b"\0" * 2048)
    bootable, plain = tmp_path / "boot.iso", tmp_path / "plain.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "WEBOS", "-b", "boot/boot.img", "-no-emul-boot",
                    "-o", str(bootable), str(tree)], check=True)
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "PLAIN", "-o", str(plain), str(tree)], check=True)

    def report(path):
        result = subprocess.run(converters.xorriso_args(str(path)), capture_output=True, text=True)
        return result.stdout + result.stderr

    assert converters.check_iso(report(bootable)) == {"format": "iso9660", "volume_id": "WEBOS", "el_torito": ["BIOS"]}
    with pytest.raises(FormatMismatch, match="not bootable"):
        converters.check_iso(report(plain))
    not_iso = tmp_path / "x.iso"
    not_iso.write_bytes(b"\0" * 100_000)
    with pytest.raises(FormatMismatch, match="no ISO 9660"):
        converters.check_iso(report(not_iso))
    head = bootable.read_bytes()[:36 * 1024]
    assert converters.check_signature("anaconda-iso", head) == {"volume_id": "WEBOS"}
    with pytest.raises(FormatMismatch):
        converters.check_signature("anaconda-iso", b"\0" * 40000)
    volume_id = converters.ISO_PVD_OFFSET + 40  # a volume id holding NULs is stored with replacement characters
    nul_id = head[:volume_id] + b"WEB\0OS" + b"\0" * 26 + head[volume_id + 32:]
    assert converters.check_signature("anaconda-iso", nul_id) == {"volume_id": "WEB\ufffdOS" + "\ufffd" * 26}


def test_a_gce_tarball_must_hold_disk_raw():
    assert converters.check_gce("disk.raw\n")["format"] == "gce-tarball"
    with pytest.raises(FormatMismatch, match="holds image.raw, not disk.raw"):
        converters.check_gce("image.raw\n")


def test_qcow2_facts_include_the_compat_level(tmp_path):
    require_tool("qemu-img")
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", str(path), "1G"], check=True)
    info = json.loads(qemu_img_info(path))
    assert converters.check_qemu_img("qcow2", json.dumps(info))["qcow2_compat"] == "1.1"


# The config the maintainer quotes in bootc-image-builder pull request 749 (issue 748: bib sized the root LV 0 itself).
EVERY_SIZE_GIVEN = {"customizations": {"disk": {"partitions": [
    {"type": "lvm", "minsize": "10 GiB", "logical_volumes": [{"minsize": "2 GiB", "fs_type": "swap"}]}]}}}
# osbuild/images pull request 1061: "the `disk` code will create zero sized partitions when `minsize` is omited".
MINSIZE_LEFT_OUT = {"customizations": {"disk": {"partitions": [
    {"type": "lvm", "minsize": "10 GiB", "logical_volumes": [{"mountpoint": "/var/log", "fs_type": "xfs"}]}]}}}
ZERO_SIZE_LOG = (Path(__file__).resolve().parents[1] / "data" / "failures" / "bib-config-error-pr1061.log")


@pytest.mark.parametrize("config, facts", [
    ({}, set()),
    ({"customizations": {"filesystem": [{"mountpoint": "/", "minsize": "10 GiB"}]}}, set()),
    (EVERY_SIZE_GIVEN, set()),
    (MINSIZE_LEFT_OUT, {"config-disk-minsize-missing"}),
    ({"customizations": {"disk": {"partitions": [{"type": "plain", "mountpoint": "/data", "fs_type": "ext4"}]}}},
     {"config-disk-minsize-missing"}),
    ({"customizations": {"disk": {"partitions": [{"type": "btrfs", "minsize": 0, "subvolumes": [
        {"name": "root", "mountpoint": "/"}]}]}}}, {"config-disk-minsize-missing"}),
])
def test_a_disk_customization_without_a_minsize_is_a_fact_the_explainer_is_given(config, facts):
    assert diskconfig.failure_facts(config) == facts


def test_a_zero_sized_volume_is_the_configs_fault_only_when_the_config_left_out_a_minsize():
    lines = ZERO_SIZE_LOG.read_text().splitlines()
    left_out = classify_failure(lines, facts=diskconfig.failure_facts(MINSIZE_LEFT_OUT))
    assert left_out.cause == Cause.CONFIG
    assert left_out.summary == "'0B' does not match '[1-9][0-9]*[bBsSkKmMgGtTpPeE]?'"
    assert left_out.hint.startswith("Partition without a minimum size: ") and "minsize" in left_out.hint
    every_size = classify_failure(lines, facts=diskconfig.failure_facts(EVERY_SIZE_GIVEN))
    assert every_size.cause == Cause.OTHER
    assert every_size.hint.startswith("Known bug in this tool version: ")
