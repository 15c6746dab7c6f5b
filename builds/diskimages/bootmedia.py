"""What a boot test boots, made from the image itself: its kernel and its whole root file system.

A bootc image carries its kernel at `/usr/lib/modules/<version>/vmlinuz`. The worker copies the digest out of the
registry (`skopeo copy ... dir:`), and this module flattens the image's layers (whiteouts applied, as podman would)
into one newc cpio archive, which QEMU hands to that kernel as its initramfs: the image's own `/sbin/init` is then the
first process, running on the image's own files. Nothing comes from the portal but `/dev/console`, which the kernel
needs to give init a console (its own built-in initramfs has it too), the empty mount points /dev, /proc and /sys
when the image's layers lack them (container builds mount over them, so they are often not in any layer), and, when
the test logs in over SSH, what an installer's configuration would add (`add_files`: the run's keys, the deployment
record).

This is the cheap, faithful-enough way to boot a small image: a production bootc image boots from a disk through its
bootloader and ostree; that path needs bootc-image-builder, which cannot run here. The archive is held in memory, so
`BOOT_TEST_ROOTFS_MAX_BYTES` bounds what is booted this way.

Pure: reads files, writes one file; no subprocess, no database.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

KERNEL_DIR = "usr/lib/modules"
BZIMAGE_MAGIC_OFFSET, BZIMAGE_MAGIC = 0x202, b"HdrS"
LAYER_TYPES = ("tar", "tar+gzip", "tar.gzip", "gzip")  # zstd layers are refused by name below


class BootMediaError(Exception):
    """The image cannot be booted this way; the message says why, for the run's reason."""


@dataclass
class Entry:
    """One file of the flattened root file system."""

    kind: int  # stat.S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes = b""  # a file's content, a link's target
    rdev: tuple[int, int] = (0, 0)


@dataclass
class BootMedia:
    kernel_version: str
    kernel: Path
    initramfs: Path
    files: int
    size: int


def _norm(name: str) -> str:
    name = posixpath.normpath("/" + name).lstrip("/")
    return "" if name == "." else name


def _kind(member: tarfile.TarInfo) -> int | None:
    if member.isreg():
        return stat.S_IFREG
    if member.isdir():
        return stat.S_IFDIR
    if member.issym():
        return stat.S_IFLNK
    if member.ischr():
        return stat.S_IFCHR
    if member.isblk():
        return stat.S_IFBLK
    if member.isfifo():
        return stat.S_IFIFO
    return None


def layers_of(image_dir: Path) -> list[Path]:
    """The layer files of an image copied with `skopeo copy ... dir:IMAGE_DIR`, lowest first."""
    try:
        manifest = json.loads((image_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BootMediaError(f"the copied image has no readable manifest ({exc})") from None
    if "manifests" in manifest:
        raise BootMediaError("the digest is a manifest list; boot the digest of one architecture")
    layers = []
    for layer in manifest.get("layers", []):
        media_type = layer.get("mediaType", "")
        if "zstd" in media_type:
            raise BootMediaError(f"layer {layer.get('digest', '?')} is zstd-compressed, which the boot test cannot "
                                 "unpack; push the image with gzip layers")
        layers.append(image_dir / layer["digest"].split(":", 1)[-1])
    if not layers:
        raise BootMediaError("the image has no layers")
    return layers


def flatten(layers: list[Path], *, max_bytes: int) -> dict[str, Entry]:
    """The root file system the layers make, lowest first, with OCI whiteouts applied. Hard links become copies."""
    entries: dict[str, Entry] = {}
    total = 0
    for layer in layers:
        try:
            tar = tarfile.open(layer, "r:*")  # noqa: SIM115 - closed below; tarfile detects gzip itself
        except (OSError, tarfile.TarError) as exc:
            raise BootMediaError(f"layer {layer.name[:12]} is not a tar archive ({exc})") from None
        with tar:
            for member in tar:
                name = _norm(member.name)
                if not name:
                    continue
                parent, base = posixpath.split(name)
                if base == ".wh..wh..opq":
                    prefix = parent + "/" if parent else ""
                    for other in [n for n in entries if n.startswith(prefix) and n != parent]:
                        del entries[other]
                    continue
                if base.startswith(".wh."):
                    gone = posixpath.join(parent, base[4:])
                    for other in [n for n in entries if n == gone or n.startswith(gone + "/")]:
                        del entries[other]
                    continue
                if member.islnk():
                    target = entries.get(_norm(member.linkname))
                    if target is not None:
                        entries[name] = Entry(**{**target.__dict__})
                    continue
                kind = _kind(member)
                if kind is None:
                    continue
                data = b""
                if kind == stat.S_IFREG:
                    total += member.size
                    if total > max_bytes:
                        raise BootMediaError(f"the image's files pass {max_bytes // (1024 * 1024)} MiB "
                                             "(BOOT_TEST_ROOTFS_MAX_BYTES), more than a boot test holds in memory")
                    data = tar.extractfile(member).read()
                elif kind == stat.S_IFLNK:
                    data = member.linkname.encode()
                if kind == stat.S_IFDIR and name in entries and entries[name].kind == stat.S_IFDIR:
                    entries[name].mode = member.mode  # a directory again: its contents stay
                    continue
                if kind != stat.S_IFDIR:
                    for other in [n for n in entries if n.startswith(name + "/")]:
                        del entries[other]
                entries[name] = Entry(kind=kind, mode=member.mode & 0o7777, uid=member.uid, gid=member.gid,
                                      mtime=int(member.mtime), data=data, rdev=(member.devmajor, member.devminor))
    return entries


def find_kernel(entries: dict[str, Entry]) -> tuple[str, str]:
    """(version, path) of the kernel the image carries where bootc images keep it."""
    found = sorted(name for name, entry in entries.items()
                   if entry.kind == stat.S_IFREG and name.startswith(KERNEL_DIR + "/")
                   and name.count("/") == 4 and name.endswith("/vmlinuz"))
    if not found:
        raise BootMediaError(f"the image has no kernel at /{KERNEL_DIR}/<version>/vmlinuz, where bootc images keep it, "
                             "so it cannot boot")
    path = found[-1]
    kernel = entries[path].data
    if kernel[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] != BZIMAGE_MAGIC:
        raise BootMediaError(f"/{path} is not a Linux kernel image (no bzImage header)")
    return path.split("/")[3], path


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _cpio_entry(ino: int, name: str, mode: int, *, uid=0, gid=0, mtime=0, data=b"", rdev=(0, 0), nlink=1) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + "".join(f"{value:08X}" for value in fields).encode()
    return header + encoded + _pad(len(header) + len(encoded)) + data + _pad(len(data))


def write_cpio(entries: dict[str, Entry], path: Path, *, leave_out: tuple[str, ...] = ()) -> int:
    """Write `entries` as a newc cpio archive (parents before children), plus /dev/console and the mount points.
    Returns the number of entries written."""
    extra = {}
    for mount_point in ("dev", "proc", "sys"):  # where init mounts the kernel's file systems
        if mount_point not in entries:
            extra[mount_point] = Entry(kind=stat.S_IFDIR, mode=0o755, uid=0, gid=0, mtime=0)
    if "dev/console" not in entries:
        extra["dev/console"] = Entry(kind=stat.S_IFCHR, mode=0o600, uid=0, gid=0, mtime=0, rdev=(5, 1))
    everything = {**entries, **extra}
    count = 0
    with open(path, "wb") as out:
        for ino, name in enumerate(sorted(everything), start=1):
            if name in leave_out:
                continue
            entry = everything[name]
            data = entry.data if entry.kind in (stat.S_IFREG, stat.S_IFLNK) else b""
            out.write(_cpio_entry(ino, name, entry.kind | entry.mode, uid=entry.uid, gid=entry.gid, mtime=entry.mtime,
                                  data=data, rdev=entry.rdev, nlink=2 if entry.kind == stat.S_IFDIR else 1))
            count += 1
        out.write(_cpio_entry(0, "TRAILER!!!", 0))
    return count


def add_files(entries: dict[str, Entry], files: dict[str, tuple[int, bytes]]) -> None:
    """Put `files` ({path: (mode, content)}, owned by root) into the root file system, with any parent directory
    missing (0755, or 0700 for a `.ssh`). What the portal adds as an installer would: the run's SSH keys and the
    deployment record (`vmaccess`)."""
    for path, (mode, data) in files.items():
        name = _norm(path)
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in entries or entries[parent].kind != stat.S_IFDIR:
                entries[parent] = Entry(kind=stat.S_IFDIR, mode=0o700 if parts[depth - 1] == ".ssh" else 0o755,
                                        uid=0, gid=0, mtime=0)
        entries[name] = Entry(kind=stat.S_IFREG, mode=mode, uid=0, gid=0, mtime=0, data=data)


def manifest_digest(image_dir: Path) -> str:
    """The digest of the manifest `skopeo copy ... dir:` wrote: what the registry served for the digest asked for."""
    try:
        return "sha256:" + hashlib.sha256((image_dir / "manifest.json").read_bytes()).hexdigest()
    except OSError as exc:
        raise BootMediaError(f"the copied image has no readable manifest ({exc})") from None


def prepare(image_dir: Path, work_dir: Path, *, max_bytes: int,
            extra_files: dict[str, tuple[int, bytes]] | None = None) -> BootMedia:
    """Make the kernel and initramfs of the image copied to `image_dir`, in `work_dir`, with `extra_files` added."""
    entries = flatten(layers_of(image_dir), max_bytes=max_bytes)
    if extra_files:
        add_files(entries, extra_files)
    version, kernel_path = find_kernel(entries)
    kernel = work_dir / "vmlinuz"
    kernel.write_bytes(entries[kernel_path].data)
    initramfs = work_dir / "rootfs.cpio"
    files = write_cpio(entries, initramfs, leave_out=(kernel_path,))
    return BootMedia(kernel_version=version, kernel=kernel, initramfs=initramfs, files=files,
                     size=initramfs.stat().st_size)
