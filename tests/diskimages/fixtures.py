"""The disk image test bed: a stand-in bootc-image-builder image, built locally from the busybox base, that takes bib's
arguments and writes real-format files (qcow2, GPT raw, vmdk, vhd, GCE tarball, bootable ISO) at bib's output paths.

Only the builder image is stood in for: the portal's own path (podman pull, podman run with its mounts, log streaming,
format checks with qemu-img and xorriso, checksums, storage, download) runs exactly as in production. The stand-in's
script is tests/standin/bootc-image-builder.

Its fixtures reach every test through tests/conftest.py's pytest_plugins.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.builds.fixtures import BASE_IMAGE
from tests.helpers import require_tool

STANDIN_IMAGE = "localhost/bootc-image-builder-standin:latest"
STANDIN_SCRIPT = Path(__file__).resolve().parents[1] / "standin" / "bootc-image-builder"
ISO_VOLUME_ID = "STANDIN-BOOTC"


def make_outputs(directory: Path):
    """The real-format files the stand-in copies out: small, but each one what its type must be."""
    run = lambda *args: subprocess.run(args, check=True, capture_output=True)  # noqa: E731
    run("qemu-img", "create", "-q", "-f", "qcow2", str(directory / "disk.qcow2"), "10G")
    raw = directory / "disk.raw"
    run("truncate", "-s", "4M", str(raw))
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=b"label: gpt\n,2M,U\n,,L\n", check=True, capture_output=True)
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(raw), str(directory / "disk.vmdk"))
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "vpc", str(raw), str(directory / "disk.vhd"))
    run("tar", "-C", str(directory), "-czf", str(directory / "image.tar.gz"), "disk.raw")
    tree = directory / "iso-tree"
    (tree / "isolinux").mkdir(parents=True)
    (tree / "isolinux" / "boot.img").write_bytes(b"\0" * 2048)
    (tree / "README").write_text("stand-in installer\n")
    run("xorriso", "-as", "mkisofs", "-quiet", "-V", ISO_VOLUME_ID, "-b", "isolinux/boot.img", "-no-emul-boot",
        "-boot-load-size", "4", "-o", str(directory / "install.iso"), str(tree))
    shutil.rmtree(tree)


@pytest.fixture(scope="session")
def bib_standin(podman_store):
    """The stand-in image in the session's podman store: localhost/bootc-image-builder-standin:latest."""
    require_tool("qemu-img", "xorriso", "sfdisk", "tar")
    context = Path(tempfile.mkdtemp(prefix="portal-bib-standin-"))
    try:
        make_outputs(context)
        shutil.copy2(STANDIN_SCRIPT, context / "bootc-image-builder")
        (context / "Containerfile").write_text(
            f"FROM {BASE_IMAGE}\n"
            "COPY disk.qcow2 disk.raw disk.vmdk disk.vhd image.tar.gz install.iso /standin/\n"
            "COPY bootc-image-builder /usr/bin/bootc-image-builder\n"
            'ENTRYPOINT ["/usr/bin/bootc-image-builder"]\n'
        )
        podman_store.run("build", "--pull=never", "--tag", STANDIN_IMAGE, str(context))
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return STANDIN_IMAGE


@pytest.fixture
def diskimage_settings(settings, tmp_path, bib_standin):
    """Conversions with the stand-in: it is the only builder image, never pulled; artifacts go to a fresh MEDIA_ROOT."""
    settings.DISK_IMAGE_BACKEND = "bib"
    settings.DISK_IMAGE_BUILDER_IMAGES = [bib_standin]
    settings.DISK_IMAGE_BUILDER_PULL = "never"
    settings.BUILD_PULL_POLICY = "never"
    settings.BUILD_CANCEL_POLL_SECONDS = 0.5
    settings.MEDIA_ROOT = str(tmp_path / "media")
    from django.core.files.storage import storages

    storages._storages.pop("default", None)  # FileSystemStorage reads MEDIA_ROOT when created
    yield settings
    storages._storages.pop("default", None)
