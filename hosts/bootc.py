"""Reading `bootc status` documents, tolerantly.

bootc prints a Kubernetes-style `BootcHost` object (`org.containers.bootc/v1`, earlier `v1alpha1`) as JSON when asked
(`--format=json`) and as YAML otherwise. Hosts run many bootc versions, so every field is optional, unknown keys are
ignored, wrong types read as "absent", and YAML's implicit typing is turned off for numbers and dates (a version such as
`20231230.10` must stay that string, not become a float). serde's YAML enum tags (`signature: !ostreeRemote "fedora"`)
read as the JSON form (`{"ostreeRemote": "fedora"}`).

`parse_status(text)` returns a `BootcStatus` or raises `StatusUnreadable` with a reason a person understands; it never
raises anything else, whatever the input.
"""

import json
import re
from dataclasses import asdict, dataclass, field

import yaml

from portal import failures
from portal.formatting import short_digest
from portal.text import NUL, first_nul

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024

# bootc's human-readable status (`bootc status` without --format): older releases print "No staged image present" and
# "Current booted image: ...", newer ones "● Booted image: ..." (bootc-dev/bootc#900, #1795).
HUMAN_FORMAT_RE = re.compile(r"^\s*(?:[●*]\s*)?(?:No (?:staged|rollback) image present|Current (?:booted|staged|rollback) "
                             r"image:|(?:Booted|Staged|Rollback) image:|System is not deployed via bootc)", re.M)
# A bootc that predates --format-version refuses it the way clap refuses any unknown option.
FORMAT_VERSION_REFUSED_RE = re.compile(r"unexpected argument '--format-version'|Found argument '--format-version' "
                                       r"which wasn't expected|unrecognized option '--format-version'")


class StatusUnreadable(ValueError):
    """The output is not a bootc status document we can read."""


@dataclass(frozen=True)
class ImageInfo:
    """One image as bootc reports it (an `ImageStatus`): the reference and what it resolved to."""

    image: str = ""  # the reference: registry/repo:tag, or a path for oci transports
    transport: str = ""
    signature: str = ""
    version: str = ""
    timestamp: str = ""
    digest: str = ""  # per-architecture manifest digest (bootc resolves manifest lists to the host's platform)
    architecture: str = ""

    @property
    def reference(self):
        """The reference as bootc prints it: `oci:/path` for non-registry transports."""
        if self.transport and self.transport != "registry" and self.image:
            return f"{self.transport}:{self.image}"
        return self.image

    @property
    def short_digest(self):
        return short_digest(self.digest)


@dataclass(frozen=True)
class Entry:
    """One deployment (a `BootEntry`)."""

    image: ImageInfo | None = None  # None for a plain ostree commit that bootc did not deploy
    cached_update: ImageInfo | None = None  # a newer image found by `bootc upgrade --check`
    pinned: bool = False
    incompatible: bool = False
    download_only: bool = False
    soft_reboot_capable: bool = False
    store: str = ""
    ostree_checksum: str = ""
    stateroot: str = ""
    deploy_serial: int | None = None

    @property
    def digest(self):
        return self.image.digest if self.image else ""

    @property
    def version(self):
        return self.image.version if self.image else ""

    @property
    def update_available(self):
        """A cached update that differs from this entry (bootc shows none when the digests are equal)."""
        return bool(self.cached_update and self.cached_update.digest and self.cached_update.digest != self.digest)


@dataclass(frozen=True)
class BootcStatus:
    api_version: str = ""
    kind: str = ""
    spec_image: ImageInfo | None = None  # what the host tracks (`spec.image`): only image/transport/signature are set
    boot_order: str = ""
    booted: Entry | None = None
    staged: Entry | None = None
    rollback: Entry | None = None
    other_deployments: tuple = field(default_factory=tuple)
    rollback_queued: bool = False
    host_type: str = ""  # "bootcHost" or ""
    usr_overlay: str = ""  # e.g. "transient, read/write"
    read_only: bool = False

    @property
    def is_bootc(self):
        """bootc manages the host when it booted a deployment and says so (older bootc does not print `type`, but then
        the booted entry is a container image)."""
        return self.booted is not None and (self.host_type == "bootcHost" or self.booted.image is not None)

    @property
    def next_boot(self):
        """The entry the next boot will use: the rollback when one is queued, else the staged one, else the booted."""
        if self.rollback_queued and self.rollback is not None:
            return self.rollback
        if self.staged is not None and not self.staged.download_only:
            return self.staged
        return self.booted

    def to_dict(self):
        return asdict(self)


# --- Loading ---------------------------------------------------------------------------------------------------------


class _StatusLoader(yaml.SafeLoader):
    """SafeLoader with numbers and dates kept as the text they were written as, and any `!tag` read as {tag: value}."""


def _as_text(loader, node):
    return loader.construct_scalar(node)


for _tag in ("int", "float", "timestamp"):
    _StatusLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _as_text)


def _tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


_StatusLoader.add_multi_constructor("!", _tagged)


def load_document(text):
    """The raw mapping from JSON (fast path) or YAML. Raises StatusUnreadable."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise StatusUnreadable("The output is not UTF-8 text.") from None
    if len(text) > MAX_DOCUMENT_BYTES:
        raise StatusUnreadable(f"The output is larger than {MAX_DOCUMENT_BYTES // 1024 // 1024} MiB.")
    nul = first_nul(text)
    if nul is not None:
        raise StatusUnreadable(f"The output holds a NUL byte at line {nul[0]}, column {nul[1]}: bootc prints text, so "
                               "this is not a status document.")
    stripped = text.strip()
    if not stripped:
        raise StatusUnreadable("bootc printed nothing.")
    if not stripped.startswith(("{", "[")) and HUMAN_FORMAT_RE.search(stripped):
        raise StatusUnreadable("This is bootc's human-readable status, not a status document: the portal reads "
                               "`bootc status --format=json --format-version=1` (or `--format=json` on a bootc too old "
                               "for --format-version). Check that nothing on the host (an alias or a wrapper) drops "
                               "the --format option.")
    try:
        document = json.loads(stripped)
    except RecursionError:
        raise StatusUnreadable("The output is nested too deeply to be a bootc status.") from None
    except ValueError as json_error:
        if stripped.startswith(("{", "[")):  # bootc's YAML never starts so: this is JSON, broken
            raise StatusUnreadable(f"The JSON is malformed or cut off: {json_error}.") from None
        try:
            # Reviewed: _StatusLoader is a SafeLoader subclass (no Python objects), with text-only scalars.
            document = yaml.load(stripped, Loader=_StatusLoader)  # noqa: S506 # nosec B506
        except RecursionError:
            raise StatusUnreadable("The output is nested too deeply to be a bootc status.") from None
        except yaml.YAMLError as yaml_error:
            first_line = str(yaml_error).strip().splitlines()[0] if str(yaml_error).strip() else "unreadable"
            raise StatusUnreadable(f"The output is neither JSON nor YAML: {first_line}.") from None
        except Exception as error:  # noqa: BLE001 - PyYAML raises odd types on hostile input; none may escape
            raise StatusUnreadable(f"The output could not be read as YAML: {type(error).__name__}.") from None
    if not isinstance(document, dict):
        raise StatusUnreadable("The output is not a BootcHost document (expected a mapping at the top).")
    where = _nul_path(document)
    if where is not None:
        raise StatusUnreadable(f"The status holds a NUL character in {where or 'a key at the top'} (written as "
                               "\\u0000): bootc never prints one, so this is not a status document.")
    return document


def _nul_path(value, path=""):
    """The path (`status.booted.image.version`, `a[0]`) of the first key or string holding a NUL, or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key)
            inner = f"{path}.{key_text}" if path else key_text
            if NUL in key_text:
                return inner
            found = _nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


# --- Reading fields --------------------------------------------------------------------------------------------------


def _map(value):
    return value if isinstance(value, dict) else {}


def _text(value):
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def _bool(value):
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _int(value):
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _signature(value):
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        key, inner = next(iter(value.items()))
        inner_text = _text(inner)
        return f"{key}:{inner_text}" if inner_text else _text(key)
    return ""


def _reference(value):
    data = _map(value)
    return _text(data.get("image")), _text(data.get("transport")), _signature(data.get("signature"))


def _image_status(value):
    if not isinstance(value, dict):
        return None
    image, transport, signature = _reference(value.get("image"))
    return ImageInfo(
        image=image,
        transport=transport,
        signature=signature,
        version=_text(value.get("version")),
        timestamp=_text(value.get("timestamp")),
        digest=_text(value.get("imageDigest")),
        architecture=_text(value.get("architecture")),
    )


def _entry(value):
    if not isinstance(value, dict):
        return None
    ostree = _map(value.get("ostree"))
    return Entry(
        image=_image_status(value.get("image")),
        cached_update=_image_status(value.get("cachedUpdate")),
        pinned=_bool(value.get("pinned")),
        incompatible=_bool(value.get("incompatible")),
        download_only=_bool(value.get("downloadOnly")),
        soft_reboot_capable=_bool(value.get("softRebootCapable")),
        store=_text(value.get("store")),
        ostree_checksum=_text(ostree.get("checksum")),
        stateroot=_text(ostree.get("stateroot")),
        deploy_serial=_int(ostree.get("deploySerial")),
    )


_ACCESS = {"readOnly": "read-only", "readWrite": "read/write"}


def _usr_overlay(status, spec):
    overlay = status.get("usrOverlay")
    if isinstance(overlay, dict):
        access = _ACCESS.get(_text(overlay.get("accessMode")), _text(overlay.get("accessMode")))
        persistence = _text(overlay.get("persistence"))
        return ", ".join(part for part in (persistence, access) if part)
    legacy = spec.get("usrOverlay")  # very old bootc put a bare access mode in spec
    if isinstance(legacy, str):
        return _ACCESS.get(legacy, legacy)
    return ""


def parse_status(text):
    """`bootc status` output (JSON or YAML, any bootc version) -> BootcStatus. Raises StatusUnreadable, nothing else."""
    document = load_document(text)
    try:
        return _parse_document(document)
    except RecursionError:
        raise StatusUnreadable("The output is nested too deeply to be a bootc status.") from None


def _parse_document(document):
    kind = _text(document.get("kind"))
    api_version = _text(document.get("apiVersion"))
    if "status" not in document and "spec" not in document and kind != "BootcHost":
        raise StatusUnreadable("The output is not a BootcHost document (no kind, spec or status).")
    if kind and kind != "BootcHost":
        raise StatusUnreadable(f"The output is a {kind[:60]!r}, not a BootcHost.")
    spec = _map(document.get("spec"))
    status = _map(document.get("status"))
    spec_image = None
    if isinstance(spec.get("image"), dict):
        image, transport, signature = _reference(spec["image"])
        spec_image = ImageInfo(image=image, transport=transport, signature=signature)
    others = status.get("otherDeployments")
    other_entries = tuple(e for e in (_entry(item) for item in others) if e) if isinstance(others, list) else ()
    return BootcStatus(
        api_version=api_version,
        kind=kind,
        spec_image=spec_image,
        boot_order=_text(spec.get("bootOrder")),
        booted=_entry(status.get("booted")),
        staged=_entry(status.get("staged")),
        rollback=_entry(status.get("rollback")),
        other_deployments=other_entries,
        rollback_queued=_bool(status.get("rollbackQueued")) or _text(spec.get("bootOrder")) == "rollback",
        host_type=_text(status.get("type")),
        usr_overlay=_usr_overlay(status, spec),
        read_only=_bool(status.get("readOnly")),
    )


# --- Comparing digests -----------------------------------------------------------------------------------------------


def digest_matches(image, expected):
    """Whether `image` (an ImageInfo) is the image `expected` names.

    `expected` maps architecture -> digest for one reference (the per-arch manifests of a multi-arch tag, plus "" for the
    top-level digest). bootc reports the per-arch digest, so a host is compared with the digest for its own architecture.
    A host that does not report its architecture (bootc before 1.1.7) matches any of the reference's digests.
    """
    if image is None or not image.digest or not expected:
        return False
    if image.architecture and image.architecture in expected:
        return expected[image.architecture] == image.digest
    return image.digest in expected.values()


def error_line(stderr):
    """The line of a failed bootc command's stderr that says what went wrong (the failure explainer's headline: the
    last error-level line, never an echoed command), or the last line when none reads as an error."""
    text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    headline = failures.explain(text, tool="bootc", succeeded=False).headline.strip()
    if headline:
        return headline
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failed_status_message(exit_status, stderr, stdout):
    """What the host page says when `bootc status` exited non-zero: stderr's error line, and that stdout is kept as
    it was (never parsed, so a half-printed document is not taken for the host's state)."""
    line = error_line(stderr) or "it printed nothing on stderr"
    message = f"bootc status failed (exit {exit_status}): {line}"
    if stdout.strip() if isinstance(stdout, str) else stdout.strip():
        message += " What it printed on stdout is kept below as it was."
    return message


def refuses_format_version(stderr):
    """Whether bootc refused --format-version (a release older than the option): read it with --format=json only."""
    text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    return FORMAT_VERSION_REFUSED_RE.search(text) is not None


FORMAT_FALLBACK_NOTE = ("This host's bootc is too old for --format-version=1: its status was read with "
                        "`bootc status --format=json` (the document version bootc printed).")
