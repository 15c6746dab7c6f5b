"""Golden files of the command line and the configuration file the portal produces for every image type, for
bootc-image-builder and for osbuild's image-builder, checked against ../shared/docs/bootc-reference.md.

The goldens live in tests/golden/diskimages/: NAME.argv holds one argument per line, NAME.config.toml the config file.
After a deliberate change, regenerate them with UPDATE_GOLDEN=1 and review the diff.
"""

import os
import re
import tomllib
from pathlib import Path

import pytest

from builds.diskimages import converters, diskchecks, diskconfig
from builds.models import Builder
from tests.helpers import SHARED_DOCS

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "diskimages"
REFERENCE = SHARED_DOCS / "bootc-reference.md"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

REF = "registry.example.com/platform/web-os@sha256:47e5ed613a970b6574bfa954ab25bb6e85656552899aa518b5961d9645102b38"
WORK = "/var/tmp/imp-build.Xy12ab"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example"
DISK_CONFIG = {"customizations": {
    "user": [{"name": "ops", "key": KEY, "groups": ["wheel"], "password": "$6$rounds=5000$portal$Zm9vYmFy"}],
    "filesystem": [{"mountpoint": "/", "minsize": "20 GiB"}, {"mountpoint": "/var/data", "minsize": "50 GiB"}],
    "kernel": {"append": "console=ttyS0 mitigations=auto"},
}}
ISO_CONFIG = {"customizations": {
    "installer": {
        "kickstart": {"contents": "text --non-interactive\nzerombr\nclearpart --all --initlabel --disklabel=gpt\n"
                                  "autopart --noswap --type=lvm\nuser --name=ops --groups=wheel --lock\n"
                                  f"sshkey --username=ops \"{KEY}\"\n"},
        "modules": {"disable": ["org.fedoraproject.Anaconda.Modules.Users"]},
    },
    "iso": {"volume_id": "WEBOS"},
    "kernel": {"append": "console=ttyS0"},
}}
AWS = converters.AwsUpload(bucket="platform-images", region="eu-west-1", ami_name="web-os build 42")

CASES = {
    # name: (backend, types, rootfs, arch, config)
    "bib-qcow2": ("bib", ["qcow2"], "xfs", "amd64", DISK_CONFIG),
    "bib-ami": ("bib", ["ami"], "xfs", "amd64", DISK_CONFIG),
    "bib-raw": ("bib", ["raw"], "ext4", "arm64", DISK_CONFIG),
    "bib-anaconda-iso": ("bib", ["anaconda-iso"], "xfs", "amd64", ISO_CONFIG),
    "bib-bootc-installer": ("bib", ["bootc-installer"], "xfs", "amd64", ISO_CONFIG),
    "bib-vmdk": ("bib", ["vmdk"], "xfs", "amd64", DISK_CONFIG),
    "bib-vhd": ("bib", ["vhd"], "btrfs", "amd64", {"customizations": {"user": DISK_CONFIG["customizations"]["user"]}}),
    "bib-gce": ("bib", ["gce"], "xfs", "amd64", DISK_CONFIG),
    "bib-qcow2-raw-vmdk": ("bib", ["qcow2", "raw", "vmdk"], "xfs", "amd64", DISK_CONFIG),
    "image-builder-qcow2": ("image-builder", ["qcow2"], "xfs", "amd64", DISK_CONFIG),
    "image-builder-ami": ("image-builder", ["ami"], "ext4", "amd64", DISK_CONFIG),
    "image-builder-raw": ("image-builder", ["raw"], "xfs", "arm64", DISK_CONFIG),
    "image-builder-bootc-installer": ("image-builder", ["bootc-installer"], "xfs", "amd64", ISO_CONFIG),
    "image-builder-vmdk": ("image-builder", ["vmdk"], "xfs", "amd64", DISK_CONFIG),
    "image-builder-vhd": ("image-builder", ["vhd"], "xfs", "amd64", DISK_CONFIG),
    "image-builder-gce": ("image-builder", ["gce"], "xfs", "amd64", DISK_CONFIG),
}


def argv_for(backend, types, rootfs, arch):
    builder = Builder(name="golden", podman_root="", podman_runroot="")
    common = dict(builder=builder, name="imp-diskimage-42-0", ref=REF, rootfs=rootfs, arch=arch,
                  config_path=f"{WORK}/config.toml", output_dir=f"{WORK}/output-0", storage="", pull="newer",
                  authfile=f"{WORK}/auth.json")
    aws = AWS if "ami" in types else None
    env_file = f"{WORK}/aws.env" if aws else None
    if backend == "image-builder":
        return converters.image_builder_args(image="ghcr.io/osbuild/image-builder-cli:latest", image_type=types[0],
                                             env_file=env_file, aws=aws, **common)
    return converters.bib_args(image="quay.io/centos-bootc/bootc-image-builder:latest", types=types,
                               env_file=env_file, aws=aws, **common)


def check_golden(path, text):
    if UPDATE or not path.exists():
        if not UPDATE and os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"golden file {path.name} is missing")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path.name} changed: review the diff, then UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", CASES)
def test_the_command_line_and_config_of_every_type_match_their_golden_files(name):
    backend, types, rootfs, arch, config = CASES[name]
    assert diskchecks.check_for_types(config, types, rootfs=rootfs).ok
    argv = argv_for(backend, types, rootfs, arch)
    check_golden(GOLDEN / f"{name}.argv", "\n".join(argv) + "\n")
    check_golden(GOLDEN / f"{name}.config.toml", diskconfig.render_toml(config))
    assert tomllib.loads((GOLDEN / f"{name}.config.toml").read_text()) == config


def test_every_type_has_a_golden_for_each_tool_that_makes_it():
    made_by = {"bib": set(diskconfig.ALL_TYPES), "image-builder": set(diskconfig.ALL_TYPES) - {"anaconda-iso"}}
    for backend, types in made_by.items():
        covered = {t for name, (b, types, *_rest) in CASES.items() if b == backend for t in types}
        assert covered == types, backend


def test_the_bootc_installer_iso_installs_the_image_itself_with_both_tools():
    bib = argv_for("bib", ["bootc-installer"], "xfs", "amd64")
    assert bib[bib.index("--installer-payload-ref") + 1] == REF and bib[-1] == REF
    image_builder = argv_for("image-builder", ["bootc-installer"], "xfs", "amd64")
    assert image_builder[image_builder.index("--bootc-installer-payload-ref") + 1] == REF
    assert image_builder[image_builder.index("--bootc-ref") + 1] == REF and image_builder[-1] == "bootc-installer"


def test_no_secret_is_ever_on_the_command_line():
    env = converters.aws_env("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "tok")
    assert b"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" in env
    for name, (backend, types, rootfs, arch, _config) in CASES.items():
        joined = " ".join(argv_for(backend, types, rootfs, arch))
        assert "wJalrXUtnFEMI" not in joined and "AKIA" not in joined, name
        if "ami" in types:
            assert f"--env-file {WORK}/aws.env" in joined


# --- Against bootc-reference.md, section 3 ---------------------------------------------------------------------------


def reference():
    if not REFERENCE.exists():
        pytest.fail(f"{REFERENCE} is missing: the shared docs sit next to the repository")
    return REFERENCE.read_text()


def test_output_paths_are_the_ones_bootc_reference_documents():
    text = reference()
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or "/" not in cells[1] or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z0-9-]+)`", cells[0])
        paths = re.findall(r"`([a-z0-9-]+/[a-z0-9.-]+)`", cells[1])
        if len(paths) == len(names):
            table.update(zip(names, paths, strict=True))
        elif len(paths) == 1:
            table.update({n: paths[0] for n in names})
    for image_type, path in converters.OUTPUT_PATHS.items():
        assert table.get(image_type) == path, f"{image_type}: {table.get(image_type)} != {path}"


def test_the_invocation_has_every_part_of_the_documented_one():
    text = reference()
    example = text[text.index("sudo podman run --rm -it --privileged"):]
    example = example[:example.index("```")]
    for part in ["--rm", "--privileged", "--pull=newer", "label=type:unconfined_t", ":/config.toml:ro", ":/output",
                 "/var/lib/containers/storage:/var/lib/containers/storage", "--type", "--rootfs", "--use-librepo=True"]:
        assert part in example, part
    argv = argv_for("bib", ["qcow2"], "xfs", "amd64")
    joined = " ".join(argv)
    for part in ["--rm", "--privileged", "--pull=newer", "--security-opt label=type:unconfined_t",
                 f"{WORK}/config.toml:/config.toml:ro", f"{WORK}/output-0:/output",
                 "/var/lib/containers/storage:/var/lib/containers/storage", "--type qcow2", "--rootfs xfs",
                 "--use-librepo=True"]:
        assert part in joined, part
    # The flags after the image are all in the reference's flag table, and the ones the issue names are there.
    image_at = argv.index("quay.io/centos-bootc/bootc-image-builder:latest")
    flags = {a.split("=")[0] for a in argv[image_at + 1:] if a.startswith("--")}
    assert {"--type", "--rootfs", "--target-arch", "--progress"} <= flags
    for flag in flags:
        assert f"`{flag}" in text or f" {flag}" in text, flag
    assert "`--progress auto\\|verbose\\|term\\|debug`" in text and argv[argv.index("--progress") + 1] == "verbose"
    ami = " ".join(argv_for("bib", ["ami"], "xfs", "amd64"))
    assert "--aws-ami-name" in text and "--aws-ami-name 'web-os build 42'" not in ami  # one argument, no quoting
    assert "--aws-ami-name web-os build 42 --aws-bucket platform-images --aws-region eu-west-1" in ami


def test_iso_and_disk_types_never_share_a_run_and_raw_and_ami_never_share_an_output():
    assert converters.plan(["qcow2", "anaconda-iso", "raw", "vmdk"]) == [["qcow2", "raw", "vmdk"], ["anaconda-iso"]]
    assert converters.plan(["raw", "ami", "gce"]) == [["raw", "gce"], ["ami"]]
    assert converters.plan(["ami", "qcow2"]) == [["qcow2", "ami"]]
    assert converters.plan(["ami"]) == [["ami"]]
    assert converters.plan(["anaconda-iso"]) == [["anaconda-iso"]]
    assert converters.plan(["bootc-installer", "anaconda-iso"]) == [["anaconda-iso"], ["bootc-installer"]]
    assert converters.plan(["qcow2", "raw"], "image-builder") == [["qcow2"], ["raw"]]
    for group in converters.plan(list(diskconfig.ALL_TYPES)):
        outputs = [converters.OUTPUT_PATHS[t] for t in group]
        assert len(outputs) == len(set(outputs))
        assert not (set(group) & set(diskconfig.ISO_TYPES) and set(group) & set(diskconfig.DISK_TYPES))


def test_a_custom_podman_store_reaches_podman_and_the_storage_mount():
    builder = Builder(name="b", podman_root="/srv/store", podman_runroot="/run/store")
    argv = converters.bib_args(builder=builder, image="bib", name="n", ref=REF, types=["qcow2"], rootfs="xfs",
                               arch="amd64", config_path="/w/config.toml", output_dir="/w/out",
                               storage=builder.podman_root)
    assert argv[:5] == ["podman", "--root", "/srv/store", "--runroot", "/run/store"]
    assert "/srv/store:/var/lib/containers/storage" in argv
