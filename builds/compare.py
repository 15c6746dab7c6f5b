"""Highlighted Containerfiles, their diffs, and what changed between two builds (packages, size, labels).

Highlighting is server-side (pygments' Dockerfile lexer, colours in static/builds/highlight.css): the text is lexed
whole, so continuations and strings are coloured right, and then split into lines so the file view and the diff can
number and anchor every line.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import mark_safe
from pygments.lexers import DockerLexer
from pygments.token import STANDARD_TYPES


def _css_class(ttype):
    while ttype is not None:
        cls = STANDARD_TYPES.get(ttype)
        if cls is not None:
            return cls
        ttype = ttype.parent
    return ""


def highlight_lines(text: str) -> list[str]:
    """One safe HTML string per line of `text`."""
    lines: list[list[str]] = [[]]
    for ttype, value in DockerLexer(stripnl=False, ensurenl=False).get_tokens(text):
        cls = _css_class(ttype)
        for i, part in enumerate(value.split("\n")):
            if i:
                lines.append([])
            if part:
                lines[-1].append(f'<span class="{cls}">{escape(part)}</span>' if cls else str(escape(part)))
    wanted = len(text.split("\n"))
    out = ["".join(parts) for parts in lines[:wanted]]
    out += [""] * (wanted - len(out))
    # Reviewed: every piece was escaped above.
    return [mark_safe(line) for line in out]  # noqa: S308 # nosec B308 B703


@dataclass
class DiffRow:
    kind: str  # "ctx", "add", "del", "gap"
    old: int | None = None
    new: int | None = None
    html: str = ""
    skipped: int = 0


def diff_rows(old_text: str, new_text: str, *, context=3) -> list[DiffRow]:
    """A unified diff as rows, highlighted, with runs of unchanged lines beyond `context` folded into "gap" rows."""
    old_lines, new_lines = old_text.split("\n"), new_text.split("\n")
    old_html, new_html = highlight_lines(old_text), highlight_lines(new_text)
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    shown_until = 0  # old lines before this index have been shown or folded
    for group in matcher.get_grouped_opcodes(context):
        if group[0][1] > shown_until:
            rows.append(DiffRow("gap", skipped=group[0][1] - shown_until))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                rows += [DiffRow("ctx", i + 1, j + 1, old_html[i]) for i, j in zip(range(i1, i2), range(j1, j2),
                                                                                   strict=True)]
            if tag in ("replace", "delete"):
                rows += [DiffRow("del", i + 1, None, old_html[i]) for i in range(i1, i2)]
            if tag in ("replace", "insert"):
                rows += [DiffRow("add", None, j + 1, new_html[j]) for j in range(j1, j2)]
        shown_until = group[-1][2]
    if rows and shown_until < len(old_lines):
        rows.append(DiffRow("gap", skipped=len(old_lines) - shown_until))
    return rows


def diff_stats(rows):
    return sum(r.kind == "add" for r in rows), sum(r.kind == "del" for r in rows)


# --- Versions and packages -------------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"~|\^|[0-9]+|[A-Za-z]+")


def _vercmp_part(a: str, b: str) -> int:
    """rpm's rpmvercmp: digits beat letters, numbers compare as numbers, ~ sorts before anything, ^ after the end."""
    if a == b:
        return 0
    sa, sb = _SEGMENT.findall(a), _SEGMENT.findall(b)
    while sa or sb:
        x = sa.pop(0) if sa else None
        y = sb.pop(0) if sb else None
        if x == "~" or y == "~":
            if x != y:
                return -1 if x == "~" else 1
            continue
        if x == "^" or y == "^":
            if x is None:
                return -1
            if y is None:
                return 1
            if x != y:
                return 1 if x == "^" else -1
            continue
        if x is None:
            return -1
        if y is None:
            return 1
        if x.isdecimal() and y.isdecimal():
            xi, yi = int(x), int(y)
            if xi != yi:
                return 1 if xi > yi else -1
        elif x.isdecimal() != y.isdecimal():
            return 1 if x.isdecimal() else -1
        elif x != y:
            return 1 if x > y else -1
    return 0


def split_evr(value: str):
    epoch, _, rest = value.rpartition(":") if ":" in value.split("-", 1)[0] else ("0", "", value)
    version, _, release = rest.partition("-")
    return int(epoch) if epoch.isdecimal() else 0, version, release


def vercmp(a: str, b: str) -> int:
    """Compare two [epoch:]version[-release] strings: -1, 0 or 1."""
    ea, va, ra = split_evr(a)
    eb, vb, rb = split_evr(b)
    if ea != eb:
        return 1 if ea > eb else -1
    return _vercmp_part(va, vb) or _vercmp_part(ra, rb)


@dataclass
class PackageDiff:
    added: list[tuple[str, str]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    upgraded: list[tuple[str, str, str]] = field(default_factory=list)
    downgraded: list[tuple[str, str, str]] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self):
        return bool(self.added or self.removed or self.upgraded or self.downgraded)


def package_diff(old: dict[str, str], new: dict[str, str]) -> PackageDiff:
    diff = PackageDiff()
    for name in sorted(set(old) | set(new)):
        if name not in old:
            diff.added.append((name, new[name]))
        elif name not in new:
            diff.removed.append((name, old[name]))
        elif old[name] == new[name]:
            diff.unchanged += 1
        elif vercmp(new[name], old[name]) >= 0:
            diff.upgraded.append((name, old[name], new[name]))
        else:
            diff.downgraded.append((name, old[name], new[name]))
    return diff


def label_diff(old: dict, new: dict):
    """[(key, old, new, kind)] with kind added/removed/changed/same."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        kind = "added" if a is None else "removed" if b is None else "same" if a == b else "changed"
        out.append((key, a, b, kind))
    return out


@dataclass
class BuildComparison:
    old: object
    new: object
    packages: PackageDiff
    labels: list
    size_delta: int | None
    containerfile_rows: list[DiffRow]
    same_revision: bool
    base_changed: bool


def compare_builds(old, new) -> BuildComparison:
    """What changed from build `old` to build `new` (any two builds the user may see)."""
    rows = [] if old.revision_id == new.revision_id else diff_rows(old.revision.containerfile, new.revision.containerfile)
    size_delta = new.size - old.size if old.size is not None and new.size is not None else None
    return BuildComparison(
        old=old, new=new, packages=package_diff(old.packages or {}, new.packages or {}),
        labels=label_diff(old.labels or {}, new.labels or {}), size_delta=size_delta, containerfile_rows=rows,
        same_revision=old.revision_id == new.revision_id, base_changed=old.base_image != new.base_image,
    )


@dataclass
class ArchitectureComparison:
    """One platform of two manifest lists: its image in each (None where a list has none) and what changed."""

    platform: str
    old: object
    new: object
    comparison: BuildComparison | None


def compare_lists(old_members, new_members) -> list[ArchitectureComparison]:
    """What changed between two manifest lists, architecture by architecture: each platform's image against the same
    platform's image in the other list (packages of an arm64 image only ever compare with arm64 ones)."""
    old_by, new_by = {m.platform: m for m in old_members}, {m.platform: m for m in new_members}
    platforms = list(dict.fromkeys([*new_by, *old_by]))
    return [ArchitectureComparison(platform=p, old=old_by.get(p), new=new_by.get(p),
                                   comparison=compare_builds(old_by[p], new_by[p]) if p in old_by and p in new_by
                                   else None)
            for p in platforms]
