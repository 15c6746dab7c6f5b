"""Checks of a disk image configuration the way the builder would make them, with every problem named by its path
(`customizations.user[0].key: ...`): `validate(config)` for any image type, `check_for_types(config, types, rootfs=...)`
for what only some image types accept, and `load(text)` to read and check a file in one step. The field checks
(`size_problem`, `ssh_key_problem`, `password_problem`) also serve the forms. What a configuration is (its keys, types,
reading and writing) is in `builds.diskimages.diskconfig`.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import PurePosixPath

from portal.text import NUL, storable

from .diskconfig import (
    ALL_TYPES,
    ANACONDA_MODULE_PREFIX,
    CRYPT_RE,
    DISK_CUSTOMIZATIONS,
    FILESYSTEM_DENIED,
    FS_TYPES,
    IGNORED_CUSTOMIZATIONS,
    IGNORED_TOP_LEVEL,
    ISO_CUSTOMIZATIONS,
    ISO_TYPES,
    METADATA_TOP_LEVEL,
    NAME_RE,
    NUL_REFUSED,
    SIZE_RE,
    SIZE_UNITS,
    SSH_KEY_RE,
    SSH_KEY_TYPES,
    ConfigError,
    Report,
    customizations,
    parse,
    sniff_format,
)
from .kickstart import check_installer_contents


def load(text: str, *, filename: str = "", fmt: str = "") -> tuple[dict, str, Report]:
    """parse() + validate(): (config, format, report). A file that cannot be read gives an empty config and one error."""
    try:
        config, fmt, notes = parse(text, filename=filename, fmt=fmt)
    except ConfigError as exc:
        report = Report()
        report.error("", str(exc))
        return {}, fmt or sniff_format(text, filename), report
    report = validate(config)
    report.warnings[:0] = notes
    return config, fmt, report


def size_bytes(value) -> int | None:
    """Bytes of "20 GiB", "3GiB", "512 MB", or of a whole number of bytes (10737418240); None when it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = SIZE_RE.match(value)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        return None
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


def size_problem(value) -> str | None:
    """Why `value` is not a size as bootc-image-builder documents it (a string with a unit, or an integer number of
    bytes: osbuild's blueprint reads `minsize = 10737418240` as 10 GiB), or None."""
    if isinstance(value, bool) or value is None:
        return "give a size with a unit, e.g. \"20 GiB\""
    if isinstance(value, int):
        return None if value >= 0 else f"{value} is negative; a size is a number of bytes or a size with a unit"
    if isinstance(value, float):
        return (f"{value} is not a whole number of bytes; write it with a unit, e.g. "
                f"\"{_human_size_example(value)}\" (units: B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)")
    if not isinstance(value, str):
        return "give a size with a unit, e.g. \"20 GiB\""
    match = SIZE_RE.match(value)
    if match is None:
        if re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            return (f"\"{value.strip()}\" has no unit; write it as \"{value.strip()} GiB\" or with another unit "
                    "(B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)")
        return f"\"{value}\" is not a size; write a number and a unit, e.g. \"20 GiB\""
    if match.group(2).lower() not in SIZE_UNITS:
        return f"\"{value}\" has an unknown unit \"{match.group(2)}\" (use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)"
    return None


def _human_size_example(value):
    value = int(value)
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value and value % factor == 0:
            return f"{value // factor} {unit}"
    return f"{value} B"


def ssh_key_problem(value, *, strict=False) -> str | None:
    """Why `value` is not one or more OpenSSH public keys (one per line), or None.

    Imported files keep documentation placeholders such as "ssh-rsa AAA ... user@email.com" (bib's README): the shape is
    right and bib accepts them. Keys typed into the portal's forms are `strict`: the key data must decode.
    """
    if not isinstance(value, str) or not value.strip():
        return "give an OpenSSH public key, e.g. \"ssh-ed25519 AAAA... you@laptop\""
    for number, line in enumerate([ln for ln in value.strip().splitlines() if ln.strip()], start=1):
        where = f"line {number}: " if len(value.strip().splitlines()) > 1 else ""
        line = line.strip()
        if line.startswith("-----BEGIN") or "PRIVATE KEY" in line:
            return f"{where}this is a private key: give the public key (the .pub file), never the private one"
        match = SSH_KEY_RE.match(line)
        if match is None:
            return (f"{where}not an OpenSSH public key: expected \"<type> <base64> [comment]\", e.g. "
                    "\"ssh-ed25519 AAAA... you@laptop\"")
        key_type = match.group("type")
        if key_type not in SSH_KEY_TYPES:
            return f"{where}\"{key_type}\" is not an SSH key type (use {', '.join(SSH_KEY_TYPES[:3])}, ...)"
        body = match.group("body")
        try:
            blob = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            if strict:
                return f"{where}the key data is not valid base64: copy the whole line of the .pub file"
            continue  # placeholders such as "AAA ..." in documentation: the shape is right, the content unknowable
        if len(blob) >= 4:
            length = int.from_bytes(blob[:4], "big")
            embedded = blob[4:4 + length].decode("ascii", "replace")
            if length < 64 and embedded != key_type:
                return f"{where}the key data says \"{embedded}\" but the line says \"{key_type}\": the key is damaged"
    return None


def password_problem(value, *, require_hash=False) -> str | None:
    """Why `value` is not a usable password: a malformed crypt hash (or plain text, with require_hash)."""
    if not isinstance(value, str) or not value:
        return "give a password hash, e.g. from `openssl passwd -6`"
    if value.startswith("$"):
        if not CRYPT_RE.match(value):
            return ("not a valid crypt hash: expected \"$id$salt$hash\" with id 1, 5, 6, y or 2b "
                    "(make one with `openssl passwd -6` or `mkpasswd -m yescrypt`)")
        return None
    if require_hash:
        return ("give a hash, not the password itself (make one with `openssl passwd -6`); plain-text passwords would "
                "be stored and shown in the portal")
    return None


class _Validator:
    def __init__(self):
        self.report = Report()

    def error(self, path, message):
        self.report.error(path, message)

    def warn(self, path, message):
        self.report.warn(path, message)

    # Typed field readers: they report a wrong type and return None.
    def text(self, obj, key, path, *, required=False, max_length=4096, single_line=False):
        full = f"{path}.{key}"
        if key not in obj:
            if required:
                self.error(full, "is required")
            return None
        value = obj[key]
        if not isinstance(value, str):
            self.error(full, f"must be text, not {_kind(value)}")
            return None
        if required and not value.strip():
            self.error(full, "must not be empty")
            return None
        if len(value) > max_length:
            self.error(full, f"is {len(value):,} characters long; at most {max_length:,}")
            return None
        if single_line and ("\n" in value or "\r" in value):
            self.error(full, "must be a single line")
            return None
        return value

    def boolean(self, obj, key, path):
        if key in obj and not isinstance(obj[key], bool):
            self.error(f"{path}.{key}", f"must be true or false, not {_kind(obj[key])}")
            return None
        return obj.get(key)

    def integer(self, obj, key, path, *, minimum=0):
        if key not in obj:
            return None
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(f"{path}.{key}", f"must be a whole number, not {_kind(value)}")
            return None
        if value < minimum:
            self.error(f"{path}.{key}", f"must be at least {minimum}")
            return None
        return value

    def table(self, obj, key, path, *, required=False):
        full = f"{path}.{key}" if path else key
        if key not in obj:
            if required:
                self.error(full, "is required")
            return None
        value = obj[key]
        if not isinstance(value, dict):
            self.error(full, f"must be a table ({{...}}), not {_kind(value)}")
            return None
        return value

    def array(self, obj, key, path, *, of=dict, max_items=200):
        full = f"{path}.{key}" if path else key
        if key not in obj:
            return None
        value = obj[key]
        if not isinstance(value, list):
            what = "an array of tables ([[...]])" if of is dict else "a list"
            self.error(full, f"must be {what}, not {_kind(value)}")
            return None
        if len(value) > max_items:
            self.error(full, f"has {len(value)} entries; at most {max_items}")
            return None
        good = []
        for i, item in enumerate(value):
            if not isinstance(item, of):
                self.error(f"{full}[{i}]", f"must be {'a table' if of is dict else 'text'}, not {_kind(item)}")
            else:
                good.append((i, item))
        return good

    def only(self, obj, path, allowed, *, hint=""):
        for key in obj:
            if key not in allowed:
                self.error(f"{path}.{key}" if path else key,
                           f"unknown key (allowed here: {', '.join(sorted(allowed))}){hint}")

    def nulls(self, value, path):
        """TOML has no null: a JSON null anywhere cannot be written to config.toml. Nor may any text hold a NUL
        character (JSON's and TOML's \\u0000): no configuration file holds one, and the database cannot store it."""
        if value is None:
            self.error(path, "null is not allowed; leave the key out instead")
        elif isinstance(value, str):
            if NUL in value:
                self.error(path, f"holds a NUL character (\\u0000), which {NUL_REFUSED}")
        elif isinstance(value, dict):
            for key, item in value.items():
                key_path = f"{path}.{storable(key)}" if path else storable(key)
                if NUL in key:
                    self.error(key_path, f"the key holds a NUL character (\\u0000), which {NUL_REFUSED}")
                    continue
                self.nulls(item, key_path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.nulls(item, f"{path}[{i}]")

    # --- the sections ---

    def run(self, config):
        if not isinstance(config, dict):
            self.error("", "the configuration must be a table")
            return self.report
        self.nulls(config, "")
        if self.report.errors:
            return self.report
        for key in config:
            if key == "customizations" or key in METADATA_TOP_LEVEL:
                continue
            if key in IGNORED_TOP_LEVEL:
                self.warn(key, "bootc image types ignore it: the image's content comes only from the container image "
                               "(install packages in the Containerfile)")
            elif key in DISK_CUSTOMIZATIONS | ISO_CUSTOMIZATIONS | IGNORED_CUSTOMIZATIONS:
                self.error(key, f"unknown top-level key; did you mean customizations.{key}?")
            elif key == "blueprint":
                self.error(key, "the legacy \"blueprint\" wrapper must be the only top-level key")
            else:
                self.error(key, "unknown key: bootc-image-builder refuses unknown keys (allowed at the top: "
                                "customizations, name, description, version)")
        custom = self.table(config, "customizations", "")
        if custom is None:
            return self.report
        for key in custom:
            if key in IGNORED_CUSTOMIZATIONS:
                self.warn(f"customizations.{key}", "not supported by bootc image types: bootc-image-builder ignores "
                                                   "it (configure this in the Containerfile instead)")
            elif key not in DISK_CUSTOMIZATIONS | ISO_CUSTOMIZATIONS:
                self.error(f"customizations.{key}", "unknown key (bootc image types accept: "
                                                    f"{', '.join(sorted(DISK_CUSTOMIZATIONS | ISO_CUSTOMIZATIONS))})")
        p = "customizations"
        self.users(custom, p)
        self.groups(custom, p)
        kernel = self.table(custom, "kernel", p)
        if kernel is not None:
            self.only(kernel, f"{p}.kernel", {"append", "name"})
            self.text(kernel, "append", f"{p}.kernel", max_length=4096, single_line=True)
            if "name" in kernel:
                self.warn(f"{p}.kernel.name", "bootc images boot the kernel inside the image; the name is ignored")
        self.filesystems(custom, p)
        self.disk(custom, p)
        self.boolean(custom, "fips", p)
        self.files(custom, p)
        self.directories(custom, p)
        self.installer(custom, p)
        iso = self.table(custom, "iso", p)
        if iso is not None:
            self.only(iso, f"{p}.iso", {"volume_id", "application_id", "publisher"})
            self.text(iso, "volume_id", f"{p}.iso", max_length=32, single_line=True)
            self.text(iso, "application_id", f"{p}.iso", max_length=128, single_line=True)
            self.text(iso, "publisher", f"{p}.iso", max_length=128, single_line=True)
        if "filesystem" in custom and "disk" in custom:
            self.error(f"{p}.disk", "cannot be combined with customizations.filesystem: describe the whole layout in "
                                    "disk, or only minimum sizes in filesystem")
        installer = custom.get("installer")
        if isinstance(installer, dict) and isinstance(installer.get("kickstart"), dict) and (
                custom.get("user") or custom.get("group")):
            self.error(f"{p}.installer.kickstart", "a custom kickstart cannot be combined with customizations.user or "
                                                   "group: create the users in the kickstart (user, sshkey) instead")
        return self.report

    def users(self, custom, p):
        entries = self.array(custom, "user", p)
        if entries is None:
            return
        names = set()
        for i, user in entries:
            path = f"{p}.user[{i}]"
            self.only(user, path, {"name", "description", "password", "key", "home", "shell", "groups", "uid", "gid",
                                   "expiredate", "force_password_reset"})
            name = self.text(user, "name", path, required=True, max_length=32, single_line=True)
            if name is not None:
                if not NAME_RE.match(name):
                    self.error(f"{path}.name", f"\"{name}\" is not a valid user name (lower-case letters, digits, _ "
                                               "and -, starting with a letter or _; at most 32)")
                elif name in names:
                    self.error(f"{path}.name", f"user \"{name}\" is listed twice")
                names.add(name)
            password = self.text(user, "password", path, max_length=1024, single_line=True)
            if password is not None:
                problem = password_problem(password)
                if problem:
                    self.error(f"{path}.password", problem)
                elif not password.startswith("$"):
                    self.warn(f"{path}.password", "is plain text: it is stored in the portal and in the image "
                                                  "build; prefer a hash (openssl passwd -6)")
            key = self.text(user, "key", path, max_length=16384)
            if key is not None:
                problem = ssh_key_problem(key)
                if problem:
                    self.error(f"{path}.key", problem)
            for field_name in ("home", "shell"):
                value = self.text(user, field_name, path, max_length=1024, single_line=True)
                if value is not None and not value.startswith("/"):
                    self.error(f"{path}.{field_name}", "must be an absolute path")
            self.text(user, "description", path, max_length=1024, single_line=True)
            self.integer(user, "uid", path)
            self.integer(user, "gid", path)
            self.integer(user, "expiredate", path)
            self.boolean(user, "force_password_reset", path)
            groups = self.array(user, "groups", path, of=str)
            for j, group in groups or []:
                if not NAME_RE.match(group):
                    self.error(f"{path}.groups[{j}]", f"\"{group}\" is not a valid group name")

    def groups(self, custom, p):
        entries = self.array(custom, "group", p)
        for i, group in entries or []:
            path = f"{p}.group[{i}]"
            self.only(group, path, {"name", "gid"})
            name = self.text(group, "name", path, required=True, max_length=32, single_line=True)
            if name is not None and not NAME_RE.match(name):
                self.error(f"{path}.name", f"\"{name}\" is not a valid group name")
            self.integer(group, "gid", path)

    def size(self, obj, key, path, *, required=False):
        if key not in obj:
            if required:
                self.error(f"{path}.{key}", "is required, e.g. \"20 GiB\"")
            return None
        problem = size_problem(obj[key])
        if problem:
            self.error(f"{path}.{key}", problem)
            return None
        return size_bytes(obj[key])

    def mountpoint(self, obj, key, path, *, required=False):
        value = self.text(obj, key, path, required=required, max_length=1024, single_line=True)
        if value is None:
            return None
        if not value.startswith("/"):
            self.error(f"{path}.{key}", f"\"{value}\" must be an absolute path, e.g. /var/data")
            return None
        normalized = str(PurePosixPath(value))
        if normalized != value.rstrip("/") and value != "/":
            self.error(f"{path}.{key}", f"\"{value}\" is not a clean path (no //, . or ..)")
            return None
        if ".." in PurePosixPath(value).parts:
            self.error(f"{path}.{key}", f"\"{value}\" must not contain ..")
            return None
        return normalized

    def filesystems(self, custom, p):
        entries = self.array(custom, "filesystem", p)
        seen = set()
        for i, fs in entries or []:
            path = f"{p}.filesystem[{i}]"
            self.only(fs, path, {"mountpoint", "minsize"})
            mountpoint = self.mountpoint(fs, "mountpoint", path, required=True)
            self.size(fs, "minsize", path, required=True)
            if mountpoint is None:
                continue
            allowed = mountpoint in ("/", "/boot") or (mountpoint.startswith("/var/") and not any(
                mountpoint == d or mountpoint.startswith(d + "/") for d in FILESYSTEM_DENIED))
            if not allowed:
                self.error(f"{path}.mountpoint", f"\"{mountpoint}\" is not allowed: bootc images accept \"/\", \"/boot\" "
                                                 "and directories under /var (not /var itself, nor "
                                                 f"{', '.join(FILESYSTEM_DENIED[:3])}, ...)")
            elif mountpoint in seen:
                self.error(f"{path}.mountpoint", f"\"{mountpoint}\" is listed twice")
            seen.add(mountpoint)

    def disk(self, custom, p):
        disk = self.table(custom, "disk", p)
        if disk is None:
            return
        path = f"{p}.disk"
        self.only(disk, path, {"type", "minsize", "partitions"})
        kind = self.text(disk, "type", path, single_line=True)
        if kind is not None and kind not in ("gpt", "dos"):
            self.error(f"{path}.type", f"\"{kind}\" is not a partition table type (gpt or dos)")
        if "minsize" in disk:
            self.size(disk, "minsize", path)
        common = {"type", "part_type", "part_label", "part_uuid", "minsize"}
        allowed_by_type = {
            "plain": common | {"label", "mountpoint", "fs_type"},
            "lvm": common | {"name", "logical_volumes"},
            "btrfs": common | {"subvolumes"},
        }
        for i, part in self.array(disk, "partitions", path) or []:
            ppath = f"{path}.partitions[{i}]"
            ptype = part.get("type", "plain")
            if ptype not in allowed_by_type:
                self.error(f"{ppath}.type", f"\"{ptype}\" is not a partition type (plain, lvm or btrfs)")
                continue
            self.only(part, ppath, allowed_by_type[ptype], hint=f" for a {ptype} partition")
            for key in ("part_type", "part_label", "part_uuid", "label", "name"):
                self.text(part, key, ppath, max_length=200, single_line=True)
            if "minsize" in part:
                self.size(part, "minsize", ppath)
            if ptype == "plain":
                self.volume(part, ppath)
            elif ptype == "lvm":
                for j, lv in self.array(part, "logical_volumes", ppath) or []:
                    lpath = f"{ppath}.logical_volumes[{j}]"
                    self.only(lv, lpath, {"name", "label", "minsize", "mountpoint", "fs_type"})
                    self.text(lv, "name", lpath, max_length=200, single_line=True)
                    self.text(lv, "label", lpath, max_length=200, single_line=True)
                    if "minsize" in lv:
                        self.size(lv, "minsize", lpath)
                    self.volume(lv, lpath)
            else:
                for j, sub in self.array(part, "subvolumes", ppath) or []:
                    spath = f"{ppath}.subvolumes[{j}]"
                    self.only(sub, spath, {"name", "mountpoint"})
                    self.text(sub, "name", spath, required=True, max_length=200, single_line=True)
                    self.mountpoint(sub, "mountpoint", spath, required=True)

    def volume(self, obj, path):
        fs_type = self.text(obj, "fs_type", path, single_line=True)
        if fs_type is not None and fs_type not in FS_TYPES:
            self.error(f"{path}.fs_type", f"\"{fs_type}\" is not a file system type ({', '.join(FS_TYPES)})")
        mountpoint = self.mountpoint(obj, "mountpoint", path)
        if fs_type == "swap" and mountpoint is not None:
            self.error(f"{path}.mountpoint", "swap has no mount point: leave it out")
        if fs_type not in (None, "swap") and mountpoint is None and "mountpoint" not in obj:
            self.error(f"{path}.mountpoint", f"is required for a {fs_type} file system")

    def files(self, custom, p):
        for i, item in self.array(custom, "files", p) or []:
            path = f"{p}.files[{i}]"
            self.only(item, path, {"path", "mode", "user", "group", "data", "uri", "ensure_parents"})
            self.mountpoint(item, "path", path, required=True)
            self.mode(item, path)
            self.owner(item, "user", path)
            self.owner(item, "group", path)
            self.text(item, "data", path, max_length=512 * 1024)
            self.text(item, "uri", path, max_length=2048, single_line=True)
            self.boolean(item, "ensure_parents", path)
            if "data" in item and "uri" in item:
                self.error(f"{path}.uri", "give data or uri, not both")

    def directories(self, custom, p):
        for i, item in self.array(custom, "directories", p) or []:
            path = f"{p}.directories[{i}]"
            self.only(item, path, {"path", "mode", "user", "group", "ensure_parents"})
            self.mountpoint(item, "path", path, required=True)
            self.mode(item, path)
            self.owner(item, "user", path)
            self.owner(item, "group", path)
            self.boolean(item, "ensure_parents", path)

    def mode(self, item, path):
        mode = self.text(item, "mode", path, max_length=8, single_line=True)
        if mode is not None and not re.fullmatch(r"0?[0-7]{3,4}", mode):
            self.error(f"{path}.mode", f"\"{mode}\" is not an octal mode such as \"0644\"")

    def owner(self, item, key, path):
        if key not in item:
            return
        value = item[key]
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.error(f"{path}.{key}", f"must be a name or a number, not {_kind(value)}")
        elif isinstance(value, str) and not NAME_RE.match(value):
            self.error(f"{path}.{key}", f"\"{value}\" is not a valid {key} name")

    def installer(self, custom, p):
        installer = self.table(custom, "installer", p)
        if installer is None:
            return
        path = f"{p}.installer"
        self.only(installer, path, {"unattended", "sudo-nopasswd", "kickstart", "modules"})
        self.boolean(installer, "unattended", path)
        self.array(installer, "sudo-nopasswd", path, of=str)
        kickstart = self.table(installer, "kickstart", path)
        if kickstart is not None:
            self.only(kickstart, f"{path}.kickstart", {"contents"})
            contents = self.text(kickstart, "contents", f"{path}.kickstart", required=True, max_length=256 * 1024)
            if contents is not None:
                for problem in check_installer_contents(contents):
                    self.error(f"{path}.kickstart.contents", problem)
        modules = self.table(installer, "modules", path)
        if modules is not None:
            self.only(modules, f"{path}.modules", {"enable", "disable"})
            both = {}
            for which in ("enable", "disable"):
                for i, name in self.array(modules, which, f"{path}.modules", of=str) or []:
                    if not name.startswith(ANACONDA_MODULE_PREFIX) or not re.fullmatch(r"[A-Za-z0-9.]+", name):
                        self.error(f"{path}.modules.{which}[{i}]",
                                   f"\"{name}\" is not an Anaconda module (e.g. {ANACONDA_MODULE_PREFIX}Users)")
                    elif name in both:
                        self.error(f"{path}.modules.{which}[{i}]", f"\"{name}\" is also in {both[name]}")
                    both.setdefault(name, which)
        if installer.get("unattended") and kickstart is not None:
            self.error(f"{path}.unattended", "cannot be combined with a custom kickstart")


def _kind(value):
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def validate(config: dict) -> Report:
    """Errors and warnings of a configuration, whatever image type it is used for."""
    return _Validator().run(config)


def check_for_types(config: dict, types, *, rootfs: str = "") -> Report:
    """validate() plus what the chosen image types and root file system accept.

    A key must be accepted by every chosen type (a request that mixes an ISO with disk types shares one configuration).
    """
    report = validate(config)
    custom = customizations(config)
    types = list(types)
    for key in custom:
        if key in IGNORED_CUSTOMIZATIONS:
            continue
        refusing = [t for t in types if key not in (ISO_CUSTOMIZATIONS if t in ISO_TYPES else DISK_CUSTOMIZATIONS)]
        if not refusing:
            continue
        accepting = [t for t in ALL_TYPES if key in (ISO_CUSTOMIZATIONS if t in ISO_TYPES else DISK_CUSTOMIZATIONS)]
        if key in ("installer", "iso"):
            why = "only the installer ISOs (anaconda-iso, bootc-installer) use it"
        elif key in ("filesystem", "disk"):
            why = ("the installer ISO partitions the disk with its kickstart (autopart, part), so it does not take "
                   "disk layouts")
        else:
            why = "only disk image types use it"
        report.error(f"customizations.{key}",
                     f"{', '.join(refusing)} {'does' if len(refusing) == 1 else 'do'} not accept it: {why} "
                     f"(accepted by {', '.join(accepting)}). Pick other types, or a configuration without it.")
    if rootfs == "btrfs":
        for i, fs in enumerate(custom.get("filesystem") or []):
            if isinstance(fs, dict) and fs.get("mountpoint") not in ("/", "/boot", None):
                report.error(f"customizations.filesystem[{i}].mountpoint",
                             f"with a btrfs root file system only \"/\" and \"/boot\" can be sized, not "
                             f"\"{fs.get('mountpoint')}\"")
    return report
