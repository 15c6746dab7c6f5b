"""The host page's timeline strip: which digest the host booted over time, as coloured segments, with its rollbacks
marked. Read from the timeline's boot events (first status, a new deployment booted, rolled back), oldest first.

Drawn on the server as SVG, with the geometry in attributes and the colours in classes (static/hosts/pictures.css):
the Content-Security-Policy forbids inline styles. A digest keeps its colour along the strip (one of PALETTE, by
order of first appearance).
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from portal.formatting import short_digest

from .models import EventKind, HostEvent

WIDTH = 1000  # the strip's viewBox
PALETTE = 6
BOOT_EVENTS = (EventKind.FIRST_SEEN, EventKind.BOOTED, EventKind.ROLLED_BACK)
SHOWN = 50  # the latest boot events drawn


@dataclass
class Segment:
    digest: str
    version: str
    start: datetime
    end: datetime
    colour: int
    by_rollback: bool
    x: str = ""
    width: str = ""

    @property
    def short_digest(self):
        return short_digest(self.digest)


@dataclass
class Marker:
    at: datetime
    x: str
    text: str


@dataclass
class Strip:
    start: datetime
    end: datetime
    segments: list[Segment] = field(default_factory=list)
    rollbacks: list[Marker] = field(default_factory=list)

    @property
    def legend(self):
        """Each digest once, newest first: (short digest, version, colour)."""
        seen, out = set(), []
        for segment in reversed(self.segments):
            if segment.digest not in seen:
                seen.add(segment.digest)
                out.append(segment)
        return out


def boot_strip(host, now: datetime | None = None) -> Strip | None:
    """The strip of `host`'s boots up to `now`, or None before its first status with a digest."""
    now = now or timezone.now()
    events = list(HostEvent.objects.filter(host=host, kind__in=BOOT_EVENTS).exclude(digest="")
                  .only("at", "kind", "digest", "version", "summary").order_by("-at", "-id")[:SHOWN])[::-1]
    if not events:
        return None
    start = events[0].at
    span = max((now - start).total_seconds(), 1.0)
    strip = Strip(start=start, end=now)
    colours = {}
    for index, event in enumerate(events):
        end = events[index + 1].at if index + 1 < len(events) else now
        colour = colours.setdefault(event.digest, len(colours) % PALETTE)
        x = WIDTH * (event.at - start).total_seconds() / span
        width = max(WIDTH * (end - event.at).total_seconds() / span, 2.0)
        strip.segments.append(Segment(digest=event.digest, version=event.version, start=event.at, end=end,
                                      colour=colour, by_rollback=event.kind == EventKind.ROLLED_BACK,
                                      x=f"{x:.2f}", width=f"{width:.2f}"))
        if event.kind == EventKind.ROLLED_BACK:
            strip.rollbacks.append(Marker(at=event.at, x=f"{x:.2f}", text=event.summary))
    return strip
