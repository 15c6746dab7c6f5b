"""How the portal writes digests, durations and sizes for people: one function each, used by Python code and, through
the `formatting` template library (`{% load formatting %}`), by every template."""

from __future__ import annotations

from datetime import timedelta

from django.template.defaultfilters import filesizeformat

DIGEST_SHOWN = 12


def short_digest(digest: str | None, *, missing: str = "") -> str:
    """The first 12 hex digits of a digest ("sha256:ab12…" -> "ab12…"): enough to tell images apart on a page. Pages
    put the whole digest in a title and a copy button beside it (`includes/_digest.html`)."""
    if not digest:
        return missing
    return digest.removeprefix("sha256:")[:DIGEST_SHOWN]


def duration(value: float | timedelta | None, *, coarse: bool = False) -> str:
    """A duration in seconds (or a timedelta) as "850 ms", "42 s", "3 min 07 s", "1 h 02 min": the format of
    logviewer.js's formatDuration, so a run's duration reads the same before and after the page reloads. `coarse`
    keeps only the largest unit ("12 s", "4 min", "3 h", "2 d"), for how old something is in a crowded table."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if coarse:
        whole = max(int(seconds), 0)
        if whole < 90:
            return f"{whole} s"
        if whole < 5400:
            return f"{whole // 60} min"
        if whole < 2 * 86400:
            return f"{whole // 3600} h"
        return f"{whole // 86400} d"
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)} ms"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def size(value: int | None) -> str:
    """A size in bytes as Django writes it ("1.2 MB"); "—" when unknown."""
    if value is None:
        return "—"
    return filesizeformat(value)


def size_change(value: int | None) -> str:
    """A change of size in bytes: "+1.2 MB", "−340 KB", "no change"; "—" when unknown."""
    if value is None:
        return "—"
    if value == 0:
        return "no change"
    return ("+" if value > 0 else "−") + filesizeformat(abs(value))
