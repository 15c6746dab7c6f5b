"""bootc-image-builder and osbuild's image-builder: their command lines, where they write each type, how the portal
checks what they wrote, and why a conversion failed.

Nothing here runs anything: `builds.diskimages.pipeline` runs these argument lists through a `builds.runner` runner
(locally or over SSH). Every value is its own list element. Secrets never appear in an argument list: registry logins
go into an auth file and cloud keys into an env file (both 0600, in the conversion's work directory, deleted with it).

The invocation is the one in ../shared/docs/bootc-reference.md, section 3 (the golden files under
tests/golden/diskimages/ pin it for every type):

    podman run --rm --privileged --pull=newer --security-opt label=type:unconfined_t \
      -v ./config.toml:/config.toml:ro -v ./output:/output \
      -v /var/lib/containers/storage:/var/lib/containers/storage \
      quay.io/centos-bootc/bootc-image-builder:latest \
      --type qcow2 --rootfs xfs --target-arch x86_64 --progress verbose --use-librepo=True REF
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from builds import podman
from portal import failures
from portal.text import storable

from .diskconfig import ALL_TYPES, DISK_TYPES, ISO_TYPES

BIB = "bib"
IMAGE_BUILDER = "image-builder"
DEFAULT_STORAGE = "/var/lib/containers/storage"

# Where bootc-image-builder writes each type, under its /output (bootc-reference.md, section 3).
OUTPUT_PATHS = {
    "qcow2": "qcow2/disk.qcow2",
    "ami": "image/disk.raw",
    "raw": "image/disk.raw",
    "vmdk": "vmdk/disk.vmdk",
    "vhd": "vpc/disk.vhd",
    "gce": "gce/image.tar.gz",
    "anaconda-iso": "bootiso/install.iso",
    "bootc-installer": "bootiso/install.iso",
}
# The file name extension image-builder gives each type (it names files <distro>-<type>-<arch>.<ext>).
IMAGE_BUILDER_SUFFIXES = {
    "qcow2": ".qcow2", "ami": ".raw", "raw": ".raw", "vmdk": ".vmdk", "vhd": ".vhd", "gce": ".tar.gz",
    "anaconda-iso": ".iso", "bootc-installer": ".iso",
}
# What the format check must find: qemu-img's format name for disks, "iso9660" and "gce-tarball" for the others.
EXPECTED_FORMATS = {
    "qcow2": "qcow2", "ami": "raw", "raw": "raw", "vmdk": "vmdk", "vhd": "vpc", "gce": "gce-tarball",
    "anaconda-iso": "iso9660", "bootc-installer": "iso9660",
}
QEMU_IMG_TYPES = ("qcow2", "ami", "raw", "vmdk", "vhd")
DOWNLOAD_EXTENSIONS = {"qcow2": "qcow2", "ami": "raw", "raw": "raw", "vmdk": "vmdk", "vhd": "vhd", "gce": "tar.gz",
                       "anaconda-iso": "iso", "bootc-installer": "iso"}
CONTENT_TYPES = {
    "qcow2": "application/x-qemu-disk", "ami": "application/octet-stream", "raw": "application/octet-stream",
    "vmdk": "application/x-vmdk", "vhd": "application/x-vhd", "gce": "application/gzip",
    "anaconda-iso": "application/x-iso9660-image", "bootc-installer": "application/x-iso9660-image",
}
# The portal speaks OCI architecture names (those of builds); osbuild speaks its own.
OSBUILD_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}
ISO_ARCHITECTURES = ("amd64", "arm64")  # no installer ISO for ppc64le/s390x


@dataclass
class AwsUpload:
    bucket: str
    region: str
    ami_name: str


@dataclass
class Invocation:
    """One run of the builder container: the types it makes and where its output goes."""

    types: list[str]
    output_dir: str  # on the builder
    argv: list[str] = field(default_factory=list)
    container_name: str = ""

    def output_path(self, image_type: str) -> str:
        return f"{self.output_dir}/{OUTPUT_PATHS[image_type]}"


def plan(types, backend: str = BIB) -> list[list[str]]:
    """Group the requested types into builder runs.

    bootc-image-builder cannot mix ISO and disk types in one run, raw and ami share image/disk.raw, and both installer
    ISOs are bootiso/install.iso, so they go into separate runs (with separate output directories). image-builder builds
    one type per run.
    """
    ordered = [t for t in ALL_TYPES if t in set(types)]
    if backend == IMAGE_BUILDER:
        return [[t] for t in ordered]
    groups: list[list[str]] = []
    disks = [t for t in ordered if t in DISK_TYPES]
    isos = [t for t in ordered if t in ISO_TYPES]
    first = [t for t in disks if t != "ami"]
    if first:
        groups.append(first)
    if "ami" in disks:
        if "raw" in first:
            groups.append(["ami"])
        elif first:
            groups[0].append("ami")
        else:
            groups.append(["ami"])
    groups.extend([iso] for iso in isos)
    return groups


def run_flags(*, name: str, pull: str) -> list[str]:
    return ["run", "--rm", "--name", name, "--privileged", f"--pull={pull}", "--security-opt",
            "label=type:unconfined_t"]


def bib_args(*, builder, image: str, name: str, ref: str, types: list[str], rootfs: str, arch: str, config_path: str,
             config_format: str = "toml", output_dir: str, storage: str = "", pull: str = "newer",
             authfile: str | None = None, env_file: str | None = None, aws: AwsUpload | None = None,
             use_librepo: bool = True) -> list[str]:
    """`podman run ... bootc-image-builder --type ... REF` for one group of types (see plan())."""
    args = [*podman.global_args(builder), *run_flags(name=name, pull=pull)]
    if env_file:
        args += ["--env-file", env_file]
    args += ["-v", f"{config_path}:/config.{config_format}:ro",
             "-v", f"{output_dir}:/output",
             "-v", f"{storage or DEFAULT_STORAGE}:/var/lib/containers/storage"]
    if authfile:
        # Older bib versions pull the image themselves; they read the login from here (bib README, private registries).
        args += ["-v", f"{authfile}:/run/containers/0/auth.json:ro"]
    args.append(image)
    for image_type in types:
        args += ["--type", image_type]
    args += ["--rootfs", rootfs, "--target-arch", OSBUILD_ARCH.get(arch, arch), "--progress", "verbose"]
    if use_librepo:
        args.append("--use-librepo=True")
    if "bootc-installer" in types:
        # The installer environment is the image itself (it must contain Anaconda); the payload it installs is the
        # same digest. bib's flag is --installer-payload-ref (its README's --bootc-installer-payload-ref is not in
        # the code: bootc-reference.md, section 3).
        args += ["--installer-payload-ref", ref]
    if aws is not None:
        args += ["--aws-ami-name", aws.ami_name, "--aws-bucket", aws.bucket, "--aws-region", aws.region]
    args.append(ref)
    return args


def image_builder_args(*, builder, image: str, name: str, ref: str, image_type: str, rootfs: str, arch: str,
                       config_path: str, output_dir: str, storage: str = "", pull: str = "newer",
                       authfile: str | None = None, env_file: str | None = None,
                       aws: AwsUpload | None = None) -> list[str]:
    """`podman run ... image-builder build --bootc-ref REF ... TYPE`: osbuild's image-builder, one type per run."""
    args = [*podman.global_args(builder), *run_flags(name=name, pull=pull)]
    if env_file:
        args += ["--env-file", env_file]
    args += ["-v", f"{config_path}:/blueprint.toml:ro",
             "-v", f"{output_dir}:/output",
             "-v", f"{storage or DEFAULT_STORAGE}:/var/lib/containers/storage"]
    if authfile:
        args += ["-v", f"{authfile}:/run/containers/0/auth.json:ro"]
    args += [image, "build", "--bootc-ref", ref, "--bootc-default-fs", rootfs, "--blueprint", "/blueprint.toml",
             "--arch", OSBUILD_ARCH.get(arch, arch), "--output-dir", "/output", "--progress", "verbose"]
    if image_type == "bootc-installer":
        # --bootc-ref is the installer environment, --bootc-installer-payload-ref what it installs: both are the
        # image here (osbuild/image-builder-cli's own test builds the manifest with both flags).
        args += ["--bootc-installer-payload-ref", ref]
    if aws is not None:
        args += ["--aws-ami-name", aws.ami_name, "--aws-bucket", aws.bucket, "--aws-region", aws.region]
    args.append(image_type)
    return args


def pull_args(builder, ref: str, *, tls_verify: bool, authfile: str | None = None) -> list[str]:
    """Put the source image into the builder's container storage (bootc-image-builder reads it only from there)."""
    args = [*podman.global_args(builder), "pull", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if authfile:
        args += ["--authfile", authfile]
    return [*args, ref]


def remove_container_args(builder, name: str) -> list[str]:
    """Stop and remove a builder container left behind by a cancelled or failed run (conmon outlives `podman run`)."""
    return [*podman.global_args(builder), "rm", "--force", "--ignore", "--time", "2", name]


def aws_endpoints(region: str) -> list[str]:
    """The hosts an AMI upload talks to in `region`: S3 for the disk, EC2 to import and register it."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return [f"s3.{region}.{suffix}", f"ec2.{region}.{suffix}"]


def aws_env(access_key_id: str, secret_access_key: str, session_token: str = "") -> bytes:
    """The --env-file for an AMI upload: the AWS SDK inside the builder reads these."""
    lines = [f"AWS_ACCESS_KEY_ID={access_key_id}", f"AWS_SECRET_ACCESS_KEY={secret_access_key}"]
    if session_token:
        lines.append(f"AWS_SESSION_TOKEN={session_token}")
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError("AWS credentials must be single lines")
    return ("\n".join(lines) + "\n").encode()


# --- Checking what the builder wrote ---------------------------------------------------------------------------------


def qemu_img_info_args(path: str) -> list[str]:
    return ["qemu-img", "info", "--output=json", path]


def xorriso_args(path: str) -> list[str]:
    return ["xorriso", "-indev", path, "-pvd_info", "-report_el_torito", "plain"]


def tar_list_args(path: str) -> list[str]:
    return ["tar", "-tzf", path]


class FormatMismatch(Exception):
    """The file at a type's output path is not what that type must be."""


def check_qemu_img(image_type: str, output: str) -> dict:
    """Facts from `qemu-img info --output=json`; raises FormatMismatch when the format is not the type's."""
    try:
        info = json.loads(output)
    except ValueError:
        raise FormatMismatch("qemu-img info gave no JSON") from None
    found = info.get("format", "")
    expected = EXPECTED_FORMATS[image_type]
    if found != expected:
        raise FormatMismatch(f"{OUTPUT_PATHS[image_type]} is {found or 'of unknown format'}, not {expected}")
    facts = storable({"format": found, "virtual_size": info.get("virtual-size")})
    if found == "qcow2":
        specific = (info.get("format-specific") or {}).get("data") or {}
        if specific.get("compat"):
            facts["qcow2_compat"] = storable(specific["compat"])
    if info.get("dirty-flag"):
        raise FormatMismatch(f"{OUTPUT_PATHS[image_type]} is marked dirty by qemu-img (an interrupted write)")
    return facts


def check_iso(output: str) -> dict:
    """Facts from xorriso's -pvd_info and -report_el_torito; raises FormatMismatch for a file that is no ISO 9660."""
    if "No ISO 9660 image" in output or "PVD address" not in output:
        raise FormatMismatch("bootiso/install.iso has no ISO 9660 primary volume descriptor")
    facts = {"format": "iso9660"}
    match = re.search(r"^Volume Id\s*:\s*(.*)$", output, re.M)
    if match:
        facts["volume_id"] = match.group(1).strip()
    boot = re.findall(r"^El Torito boot img\s*:\s*\d+\s+(\S+)", output, re.M)
    facts["el_torito"] = boot
    if not boot:
        raise FormatMismatch("bootiso/install.iso is an ISO 9660 image but not bootable (no El Torito boot image)")
    return facts


def check_gce(output: str) -> dict:
    """GCE wants a gzipped tar holding exactly disk.raw."""
    names = [line.strip().removeprefix("./") for line in output.splitlines() if line.strip()]
    if "disk.raw" not in names:
        raise FormatMismatch(f"gce/image.tar.gz holds {', '.join(names[:5]) or 'nothing'}, not disk.raw")
    return {"format": EXPECTED_FORMATS["gce"], "members": names[:20]}


ISO_PVD_OFFSET = 16 * 2048


def check_signature(image_type: str, head: bytes) -> dict:
    """Byte-level checks on the stored file's first 36 KiB: a partition table for raw disks, the ISO 9660 PVD."""
    if image_type in ("raw", "ami"):
        if len(head) < 512 or head[510:512] != b"\x55\xaa":
            raise FormatMismatch("image/disk.raw has no partition table (no boot signature in its first sector)")
        return {"partition_table": "gpt" if head[512:520] == b"EFI PART" else "dos"}
    if image_type in ISO_TYPES:
        pvd = head[ISO_PVD_OFFSET:ISO_PVD_OFFSET + 7]
        if pvd[1:6] != b"CD001" or pvd[0] != 1:
            raise FormatMismatch("bootiso/install.iso has no ISO 9660 primary volume descriptor at sector 16")
        return {"volume_id": storable(head[ISO_PVD_OFFSET + 40:ISO_PVD_OFFSET + 72].decode("ascii", "replace").strip())}
    return {}


# --- Why a conversion failed -----------------------------------------------------------------------------------------


class Cause:
    DISK_FULL = "disk_full"
    ARCH_MISMATCH = "arch_mismatch"
    IMAGE_NOT_FOUND = "image_not_found"
    PRIVILEGES = "privileges"
    CONFIG = "config"
    BUILDER_IMAGE = "builder_image"
    FORMAT = "format"
    OTHER = "other"


CAUSE_LABELS = {
    Cause.DISK_FULL: "Disk full",
    Cause.ARCH_MISMATCH: "Architecture mismatch",
    Cause.IMAGE_NOT_FOUND: "Image not found in storage",
    Cause.PRIVILEGES: "Missing privileges",
    Cause.CONFIG: "Configuration refused",
    Cause.BUILDER_IMAGE: "Builder image unavailable",
    Cause.FORMAT: "Unexpected output",
    Cause.OTHER: "Failed",
}

FAILURE_PATTERNS = [
    (Cause.DISK_FULL, re.compile(r"no space left on device|ENOSPC|disk quota exceeded|not enough (free )?space", re.I),
     "The builder ran out of disk space while writing the image. Free space in its work directory and its container "
     "storage (podman system prune), or give it more: a conversion needs room for the image twice over."),
    (Cause.CONFIG, re.compile(r"unknown keys found|json: unknown field|cannot decode|blueprint validation failed|"
                              r"errors occurred while validating custom mountpoints|is not allowed|"
                              r"cannot be used with|invalid (kickstart|customizations?)|"
                              r"customizations\.[a-z_.]+: not supported|kickstart.*(error|invalid)", re.I),
     "The builder refused a key of the configuration for this image type. Fix the configuration (the key is named "
     "above) and retry."),
    (Cause.ARCH_MISMATCH, re.compile(r"exec format error|cannot build .* for architecture|architecture mismatch|"
                                     r"does not match the (expected|target) (platform|arch)|"
                                     r"no image found in (manifest list|image index) for architecture|"
                                     r"image architecture .* (differs|does not match)", re.I),
     "The image, the target architecture and the builder do not match. Convert on a builder of the image's "
     "architecture (cross-architecture builds need qemu-user-static on the builder and are experimental)."),
    (Cause.PRIVILEGES, re.compile(r"requires a privileged container|must be run in rootful|rootless|"
                                  r"cannot find mount for \"?/var/lib/containers/storage|"
                                  r"operation not permitted|permission denied|"
                                  r"failed to (create|setup) loop device|cannot set up loop device", re.I),
     "The builder container lacks privileges: bootc-image-builder needs rootful podman, --privileged and the "
     "container storage mount. Check that the builder runs podman as root and allows privileged containers."),
    (Cause.IMAGE_NOT_FOUND, re.compile(r"image not known|not present in (the )?local (container )?storage|"
                                       r"no such image|manifest unknown|failed to inspect the image|"
                                       r"reference does not exist|name unknown|"
                                       r"repository .* not found", re.I),
     "The image is not in the builder's container storage and could not be pulled: check that the digest still "
     "exists in the registry and that the team has a login for it."),
]


# The failure knowledge base's causes (portal/failure_rules.toml) that have a cause of their own on a disk image.
KNOWN_CAUSES = {
    "disk-full": Cause.DISK_FULL,
    "arch-mismatch": Cause.ARCH_MISMATCH,
    "image-not-found": Cause.IMAGE_NOT_FOUND,
    "bib-storage-mount": Cause.PRIVILEGES,
    "bib-config-error": Cause.CONFIG,
    "build-permission-denied": Cause.PRIVILEGES,
}


@dataclass
class Failure:
    cause: str
    summary: str
    hint: str
    lines: list[str]

    @property
    def label(self):
        return CAUSE_LABELS.get(self.cause, CAUSE_LABELS[Cause.OTHER])


ERROR_LINE_RE = re.compile(r"^(error|Error|ERROR|fatal|panic)\b|: error:|\berror:|failed|Traceback", re.I)


def classify_failure(lines: list[str], *, builder_image: str = "", facts: Iterable[str] = ()) -> Failure:
    """The cause of a failed builder run from its last output lines, with the line that says so. `facts` are what the
    conversion's own config says (`diskconfig.failure_facts`), for causes whose lines are the same as another's."""
    text_lines = [line for line in lines if line.strip() and not line.startswith("$ ")]
    tail = text_lines[-200:]
    if builder_image:
        repository = builder_image.rsplit(":", 1)[0] if "@" not in builder_image else builder_image.split("@")[0]
        for line in reversed(tail):
            if repository in line and re.search(r"image not known|manifest unknown|unable to pull|error pulling|"
                                                r"initializing source|pull access denied|not found", line, re.I):
                return Failure(Cause.BUILDER_IMAGE, line.strip()[:500],
                               f"The builder image {builder_image} is not on the builder and could not be pulled. "
                               "Pull it there (podman pull), or pick another builder image.", _error_lines(tail))
    explanation = failures.explain("\n".join(tail), tool="bootc-image-builder", facts=facts)
    if explanation.known and explanation.failed:
        return Failure(KNOWN_CAUSES.get(explanation.cause, Cause.OTHER), explanation.headline.strip()[:500],
                       f"{explanation.title}: {explanation.hint(limit=480 - len(explanation.title))}",
                       _error_lines(tail))
    for cause, pattern, hint in FAILURE_PATTERNS:
        for line in reversed(tail):
            if pattern.search(line):
                return Failure(cause, line.strip()[:500], hint, _error_lines(tail))
    errors = [line for line in tail if ERROR_LINE_RE.search(line)]
    summary = (errors[-1] if errors else (tail[-1] if tail else "")).strip()[:500]
    return Failure(Cause.OTHER, summary, "", _error_lines(tail))


def _error_lines(tail):
    picked = tail[-8:]
    earlier = [line for line in tail[:-8] if ERROR_LINE_RE.search(line)][-3:]
    return [line[:500] for line in earlier + picked]
