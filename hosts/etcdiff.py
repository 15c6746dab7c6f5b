"""Per-file diffs of what changed in a host's /etc against its image's version, with anything that looks like a secret
masked before it is stored or shown.

The image's version of /etc/<path> is /usr/etc/<path> on the host itself: ostree keeps the deployment's default
configuration there and `ostree admin config-diff` compares /etc with it (ostree's "three-way merge" of /etc in
ostree-sysroot-deploy.c: the old deployment's /usr/etc is the merge base). So both sides come from the host, over
the same channel, and the portal never needs the image's files.

Pure functions: `plan` says which paths are read and which are never read (files that hold nothing but secrets);
`mask_secrets` masks a text; `file_entry` turns the two sides a host printed into what is stored for one path
(a unified diff, or why there is none: binary, too large, a directory, a symbolic link, never read, unreadable), and
the host's text of a file in which nothing looks secret, which a revision that folds the changes back copies.
"""

import difflib
import re

READ_MAX = 64 * 1024  # bytes read of each side; a larger file is named, not diffed
FILES_MAX = 20  # paths diffed per reading (the list keeps its count of all)
DIFF_LINES_MAX = 400  # lines of a stored diff
MASK = "«masked»"

# Files that hold nothing but secrets (password hashes, private host keys): listed, never read.
NEVER_READ = [
    re.compile(r"^/etc/g?shadow-?$"),
    re.compile(r"^/etc/security/opasswd$"),
    re.compile(r"^/etc/ssh/ssh_host_[^/]*_key$"),
    re.compile(r"^/etc/.*\.(key|p12|pfx|keytab|jks)$"),
    re.compile(r"^/etc/(.*/)?private/.*"),
]
# Files that belong to one machine: shown, but a revision that folds the host's changes back leaves them out.
MACHINE_SPECIFIC = [
    re.compile(r"^/etc/machine-id$"), re.compile(r"^/etc/hostname$"), re.compile(r"^/etc/ssh/ssh_host_.*"),
    re.compile(r"^/etc/adjtime$"), re.compile(r"^/etc/machine-info$"),
]

_SECRET_KEY = (r"[\w.-]*(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|"
               r"credentials?|psk|auth[_-]?key|bind[_-]?pw|community)[\w.-]*")
_HARMLESS_VALUE = re.compile(r"^[\"']?(?:yes|no|true|false|on|off|none|null|required|optional|prohibit-password|"
                             r"without-password|\d{1,5})[\"']?;?$", re.IGNORECASE)
_KEY_VALUE = re.compile(rf"^(?P<head>\s*(?:export\s+)?[\"']?{_SECRET_KEY}[\"']?\s*(?:[:=]|\s)\s*)(?P<value>\S.*?)\s*$",
                        re.IGNORECASE)
_PATTERNS = [
    # user:password@ in a URL
    (re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/\s@]+:)(?P<value>[^@\s/]+)(?=@)", re.IGNORECASE), None),
    # Authorization: Bearer ..., Basic ...
    (re.compile(r"(?P<head>\b(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE), None),
    # crypt(3) hashes ($1$, $5$, $6$, $y$ yescrypt, $2b$ bcrypt)
    (re.compile(r"(?P<head>)(?P<value>\$(?:1|2[abxy]?|5|6|7|y|gy)\$[^\s:]{8,})"), None),
    # tokens with a recognisable shape: AWS access keys, GitHub, GitLab, Slack, JSON web tokens, Google API keys
    (re.compile(r"(?P<head>)(?P<value>\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}|\bglpat-[\w-]{20,}|"
                r"\bxox[abprs]-[A-Za-z0-9-]{10,}|\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}|\bAIza[\w-]{35})"), None),
]
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")


def never_read(path):
    return any(pattern.match(path) for pattern in NEVER_READ)


def machine_specific(path):
    return any(pattern.match(path) for pattern in MACHINE_SPECIFIC)


def plan(etc_changes, *, limit=FILES_MAX):
    """The first `limit` changed paths to read ([kind, path]), skipping those never read; the portal reads the image's
    side of a modified or deleted file and the host's side of a modified or added one."""
    return [[kind, path] for kind, path in etc_changes if not never_read(path) and _safe(path)][:limit]


def _safe(path):
    return path.startswith("/etc/") and "\x00" not in path and "\n" not in path and "/../" not in path + "/"


def mask_secrets(text):
    """(text with secret values replaced by «masked», how many were masked). Private key blocks go whole; values of
    keys named like passwords, secrets, tokens and keys, URL passwords, bearer tokens, crypt hashes and tokens of
    known shapes go; the names around them stay, so a diff still says what changed."""
    out, masked, in_key = [], 0, False
    for line in text.split("\n"):
        if in_key:
            if _PEM_END.search(line):
                in_key = False
                out.append(line)
            continue
        begin = _PEM_BEGIN.search(line)
        if begin:
            masked += 1
            end = _PEM_END.search(line, begin.end())
            in_key = end is None
            out.append(line[:begin.end()] + MASK + (line[end.start():] if end else ""))
            continue
        match = _KEY_VALUE.match(line)
        if match and not _HARMLESS_VALUE.match(match.group("value")) and MASK not in match.group("value"):
            line = match.group("head") + MASK
            masked += 1
        for pattern, _ in _PATTERNS:
            line, n = pattern.subn(lambda m: m.group("head") + MASK, line)
            masked += n
        out.append(line)
    return "\n".join(out), masked


def parse_side(output):
    """What ssh.etc_file's script printed: ("file", size, bytes) | ("link", target, b"") | ("dir"|"missing", 0, b"")."""
    header, _, body = output.partition(b"\n")
    word, _, rest = header.decode("utf-8", "replace").partition(" ")
    if word == "#file":
        try:
            return "file", int(rest.strip() or 0), body
        except ValueError:
            return "file", len(body), body
    if word == "#link":
        return "link", rest.strip()[:300], b""
    if word in ("#dir", "#missing"):
        return word[1:], 0, b""
    return "unreadable", 0, b""


def _text(side, limit):
    """(text, why not) of one parsed side."""
    kind, size, body = side
    if kind == "missing":
        return "", ""
    if kind == "dir":
        return None, "a directory"
    if kind == "link":
        return None, f"a symbolic link to {mask_secrets(size)[0]}"
    if kind != "file":
        return None, "could not be read"
    if size > limit or len(body) > limit:
        return None, f"too large to diff ({size:,} bytes; the portal diffs files up to {limit // 1024} KiB)"
    if b"\x00" in body:
        return None, f"a binary file ({size:,} bytes): listed, not diffed"
    try:
        return body.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, f"a binary file ({size:,} bytes): listed, not diffed"


def file_entry(path, kind, image_side, host_side, *, limit=READ_MAX):
    """What is stored for one changed path: {"status": "diff", "diff": masked unified diff, "masked": n,
    "truncated": bool} or {"status": "skipped", "why": ...}. A side is parse_side's tuple, or None when not read
    (the image's side of an added file, the host's side of a deleted one)."""
    image_text, image_why = _text(image_side, limit) if image_side is not None else ("", "")
    host_text, host_why = _text(host_side, limit) if host_side is not None else ("", "")
    why = host_why or image_why
    if why:
        entry = {"status": "skipped", "why": why}
        if machine_specific(path):
            entry["machine_specific"] = True
        return entry
    image_masked, n_image = mask_secrets(image_text)
    host_masked, n_host = mask_secrets(host_text)
    lines = list(difflib.unified_diff(image_masked.splitlines(), host_masked.splitlines(),
                                      f"image {path}" if kind != "A" else "/dev/null",
                                      f"host {path}" if kind != "D" else "/dev/null", n=3, lineterm=""))
    entry = {"status": "diff", "diff": "\n".join(lines[:DIFF_LINES_MAX]), "masked": n_image + n_host,
             "truncated": len(lines) > DIFF_LINES_MAX}
    if kind != "D" and not n_host and not machine_specific(path):
        entry["host_text"] = host_text  # nothing in it looks secret: a revision may copy it into the image
    if not lines and image_text != host_text:
        entry["only_masked_differ"] = True  # the change is in values the portal does not show
    if machine_specific(path):
        entry["machine_specific"] = True
    return entry


def never_read_entry():
    return {"status": "skipped", "why": "holds secrets only (password hashes or private keys): never read",
            "secret_file": True}
