"""Disk image configurations: the blueprint-format file bootc-image-builder reads as /config.toml (or /config.json), and
osbuild's image-builder as --blueprint.

`parse(text, filename=...)` reads TOML or JSON (the legacy {"blueprint": ...} wrapper is unwrapped); `render_toml` /
`render_json` write it back (tomli-w, never a string template); `summary` and `accepted_types` describe it. The checks
the builder would make are in `builds.diskimages.diskchecks`. No database here; presets and forms call these.

What is accepted follows bootc-image-builder (README and `bib/internal/buildconfig`, see ../shared/docs/bootc-reference.md):
unknown keys are errors (bib: "unknown keys found: [...]", "json: unknown field ..."); blueprint keys that exist but
that bootc image types ignore (packages, repositories, hostname, ...) are accepted with a warning, as bib warns about them.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import tomli_w

DISK_TYPES = ("qcow2", "ami", "raw", "vmdk", "vhd", "gce")
ISO_TYPES = ("anaconda-iso", "bootc-installer")
# anaconda-iso builds its installer from RPMs; osbuild's image-builder refuses it for bootc images in favour of
# bootc-installer (an ISO whose installer environment is the image itself, which must contain Anaconda).
DEPRECATED_TYPES = ("anaconda-iso",)
ALL_TYPES = DISK_TYPES + ISO_TYPES

# Which customizations each kind of image takes (anything else in `customizations` is refused for that type).
DISK_CUSTOMIZATIONS = frozenset({"user", "group", "kernel", "filesystem", "disk", "fips", "files", "directories"})
ISO_CUSTOMIZATIONS = frozenset({"user", "group", "kernel", "fips", "installer", "iso"})

# Blueprint keys that exist but that bootc image types ignore: accepted with a warning (bib warns too).
IGNORED_TOP_LEVEL = frozenset({"packages", "modules", "groups", "containers", "enabled_modules", "distro", "minimal",
                               "arch"})
METADATA_TOP_LEVEL = frozenset({"name", "description", "version"})
IGNORED_CUSTOMIZATIONS = frozenset({
    "hostname", "sshkey", "timezone", "locale", "firewall", "services", "openscap", "ignition", "fdo", "repositories",
    "rpm", "rhsm", "cacerts", "installation_device", "partitioning_mode", "wsl", "containers", "subscription",
})

SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3,
              "tb": 1000**4, "tib": 1024**4}
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")
NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")
# crypt(3) strings: $id$[rounds=N$]salt$hash (md5, sha256, sha512, bcrypt, yescrypt, gost-yescrypt, scrypt).
CRYPT_RE = re.compile(
    r"^\$(?:1|5|6|2[abxy]|sha1|md5)\$(?:rounds=\d+\$)?[./A-Za-z0-9]+\$[./A-Za-z0-9]+$"
    r"|^\$(?:y|gy|7)\$[./A-Za-z0-9]+\$[./A-Za-z0-9]*\$[./A-Za-z0-9]+$"
)
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
SSH_KEY_RE = re.compile(r"^(?P<type>[a-z0-9@.-]+)\s+(?P<body>[A-Za-z0-9+/]+={0,3})(?:\s+(?P<comment>.*))?$")
ANACONDA_MODULE_PREFIX = "org.fedoraproject.Anaconda.Modules."
FILESYSTEM_DENIED = ("/var/home", "/var/lock", "/var/mail", "/var/mnt", "/var/roothome", "/var/run", "/var/srv",
                     "/var/usrlocal")
FS_TYPES = ("xfs", "ext4", "vfat", "swap", "btrfs")
ROOTFS_CHOICES = ("xfs", "ext4", "btrfs")


NUL_REFUSED = "no configuration file may hold"


class ConfigError(ValueError):
    """The text cannot be read as a configuration at all (not TOML, not JSON, not a mapping)."""


@dataclass
class Problem:
    path: str
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass
class Report:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self):
        return not self.errors

    def error(self, path, message):
        self.errors.append(Problem(path, message))

    def warn(self, path, message):
        self.warnings.append(Problem(path, message))

    def error_texts(self):
        return [str(p) for p in self.errors]

    def warning_texts(self):
        return [str(p) for p in self.warnings]


# --- Reading ---------------------------------------------------------------------------------------------------------


def sniff_format(text: str, filename: str = "") -> str:
    """"toml", "json" or "yaml": from the file name when it says, else from the text."""
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix in (".toml", ".json"):
        return suffix[1:]
    if suffix in (".yaml", ".yml"):
        return "yaml"
    return "json" if text.lstrip().startswith("{") else "toml"


def parse(text: str, *, filename: str = "", fmt: str = "") -> tuple[dict, str, list[Problem]]:
    """(config, format, notes) from a config file's text. Raises ConfigError when it cannot be read.

    The legacy {"blueprint": {...}} wrapper (early 2024 bib) is unwrapped, with a note.
    """
    fmt = fmt or sniff_format(text, filename)
    name = PurePosixPath(filename).name if filename else f"config.{fmt}"
    if fmt == "yaml":
        raise ConfigError(
            f"{name} is YAML. A YAML file next to bootc-image-builder configs is a disk.yaml partition table, which "
            "bootc-image-builder reads from inside the image (/usr/lib/bootc-image-builder/disk.yaml): put it in the "
            "Containerfile with COPY. A disk image configuration is TOML or JSON."
        )
    if fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            hint = ""
            if text.lstrip().startswith("{"):
                hint = " The text looks like JSON: import it as a .json file (or choose JSON)."
            raise ConfigError(f"{name}: cannot decode TOML: {exc}.{hint}") from None
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = ""
            if re.search(r"^\s*\[\[?[A-Za-z]", text, re.M):
                hint = " The text looks like TOML: import it as a .toml file (or choose TOML)."
            raise ConfigError(f"{name}: cannot decode JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.{hint}") \
                from None
    else:
        raise ConfigError(f"Unknown configuration format {fmt!r}: use TOML or JSON.")
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a table (a JSON object), not a {type(data).__name__}.")
    notes = []
    if set(data) == {"blueprint"} and isinstance(data["blueprint"], dict):
        data = data["blueprint"]
        notes.append(Problem("blueprint", "the legacy top-level \"blueprint\" wrapper was removed; current "
                                          "bootc-image-builder reads the same customizations without it"))
    return data, fmt, notes


# --- Writing ---------------------------------------------------------------------------------------------------------


def _toml_item(value):
    """tomlkit items shaped the way bootc-image-builder's README writes configs: [[customizations.user]] blocks,
    [customizations.kernel] tables, kickstarts as multi-line strings."""
    import tomlkit  # heavy, loaded where a configuration is written (see render_toml)

    if isinstance(value, dict):
        table = tomlkit.table()
        # Plain keys first: in TOML a key written after a sub-table would belong to that sub-table.
        for key, item in sorted(value.items(), key=lambda kv: _is_table(kv[1])):
            table.add(key, _toml_item(item))
        return table
    if isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            tables = tomlkit.aot()
            for item in value:
                tables.append(_toml_item(item))
            return tables
        array = tomlkit.array()
        for item in value:
            array.append(_toml_item(item))
        if len(value) > 2 or len(str(value)) > 60:
            array.multiline(True)
        return array
    if isinstance(value, str) and "\n" in value:
        return tomlkit.string(value, multiline=True)
    return value


def _is_table(value):
    return isinstance(value, dict) or (isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value))


def render_toml(config: dict) -> str:
    """The configuration as config.toml. Checked by reading it back; tomli-w writes it if tomlkit's shape would not."""
    # tomlkit is heavy (its item classes take tens of milliseconds to import): loaded where a configuration is written,
    # not by every process that imports the disk image models.
    import tomlkit

    try:
        document = tomlkit.document()
        for key, value in sorted(config.items(), key=lambda kv: _is_table(kv[1])):
            document.add(key, _toml_item(value))
        text = tomlkit.dumps(document)
        if tomllib.loads(text) == config:
            return text
    except Exception:  # noqa: BLE001 - any surprise falls back to the plain writer
        pass
    return tomli_w.dumps(config, multiline_strings=True)


def render_json(config: dict) -> str:
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def render(config: dict, fmt: str = "toml") -> str:
    return render_json(config) if fmt == "json" else render_toml(config)


def customizations(config: dict) -> dict:
    value = config.get("customizations") if isinstance(config, dict) else None
    return value if isinstance(value, dict) else {}


def summary(config: dict) -> list[str]:
    """One line per customization, for lists and the request page: "2 users (ops, admin)", "/ at least 20 GiB"."""
    custom = customizations(config)
    out = []
    users = [u.get("name", "?") for u in custom.get("user") or [] if isinstance(u, dict)]
    if users:
        keyed = sum(1 for u in custom.get("user") if isinstance(u, dict) and u.get("key"))
        out.append(f"{len(users)} user{'s' if len(users) != 1 else ''} ({', '.join(users[:4])}"
                   f"{', ...' if len(users) > 4 else ''}){f', {keyed} with SSH key' if keyed else ''}")
    for fs in custom.get("filesystem") or []:
        if isinstance(fs, dict):
            out.append(f"{fs.get('mountpoint')} at least {fs.get('minsize')}")
    if isinstance(custom.get("disk"), dict):
        parts = custom["disk"].get("partitions") or []
        out.append(f"custom disk layout ({len(parts)} partition{'s' if len(parts) != 1 else ''})")
    kernel = custom.get("kernel")
    if isinstance(kernel, dict) and kernel.get("append"):
        out.append(f"kernel: {kernel['append']}")
    installer = custom.get("installer")
    if isinstance(installer, dict):
        if isinstance(installer.get("kickstart"), dict):
            out.append("installer kickstart")
        if isinstance(installer.get("modules"), dict):
            out.append("installer modules")
    if custom.get("fips"):
        out.append("FIPS mode")
    if custom.get("files") or custom.get("directories"):
        out.append(f"{len(custom.get('files') or [])} file(s), {len(custom.get('directories') or [])} directory(ies)")
    if isinstance(custom.get("iso"), dict):
        out.append("ISO labels")
    return out


def failure_facts(config: dict) -> set[str]:
    """What this configuration says that a failed conversion's log does not, for the failure explainer
    (`portal.failures.explain(..., facts=...)`): "config-disk-minsize-missing" when a partition or logical volume of
    the disk customization has no minsize (or a zero one). bootc-image-builder of late 2024 made such a volume zero-sized
    and osbuild refused it with the same "'0B' does not match" line that bib's own sizing bug printed from a config
    that gave every size (osbuild/images pull request 1061, bootc-image-builder issue 748)."""
    disk = customizations(config).get("disk")
    if not isinstance(disk, dict):
        return set()
    volumes = []
    for part in disk.get("partitions") or []:
        if isinstance(part, dict):
            volumes.append(part)
            volumes.extend(lv for lv in part.get("logical_volumes") or [] if isinstance(lv, dict))
    if any(not volume.get("minsize") or str(volume["minsize"]).strip() in ("0", "0B") for volume in volumes):
        return {"config-disk-minsize-missing"}
    return set()


def accepted_types(config: dict) -> list[str]:
    """The image types this configuration can be used for."""
    custom = customizations(config)
    keys = set(custom) - IGNORED_CUSTOMIZATIONS
    return [t for t in ALL_TYPES if keys <= (ISO_CUSTOMIZATIONS if t in ISO_TYPES else DISK_CUSTOMIZATIONS)]
