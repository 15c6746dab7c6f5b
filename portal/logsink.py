"""The log sink: every run's output goes through here.

Lines are numbered 1, 2, 3... and buffered; a batch is written as one `LogChunk` row (one INSERT, never one per line) when
it holds RUN_LOG_BATCH_LINES lines or RUN_LOG_CHUNK_BYTES bytes, or when its oldest line has waited RUN_LOG_BATCH_SECONDS.
The same batch is then published to the run's Channels group. Readers use `lines_after()` and `chunks()`.

A sink has one writer. Whoever feeds it from a stream that may go quiet calls `poll()` every so often (the runners do, from
their select loop), which flushes a batch that is due and beats the run's heartbeat.
"""

import time

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from . import live
from .models import LogChunk, Run


class LogSink:
    def __init__(self, run, *, publish=True):
        self.run = run
        self.publish = publish
        self.batch_lines = settings.RUN_LOG_BATCH_LINES
        self.batch_seconds = settings.RUN_LOG_BATCH_SECONDS
        self.chunk_bytes = settings.RUN_LOG_CHUNK_BYTES
        last = LogChunk.objects.filter(run=run).aggregate(last=Max("last_seq"))["last"] or 0
        self.next_seq = last + 1
        self._lines = []
        self._offsets = []
        self._bytes = 0
        self._started = None  # wall clock of the batch's first line
        self._started_mono = 0.0
        self._last_beat = time.monotonic()
        self.closed = False

    @property
    def last_seq(self):
        """The number of the last line written (flushed or buffered)."""
        return self.next_seq - 1 + len(self._lines)

    def write(self, text):
        """Add one line, or several separated by newlines. A trailing newline does not make an empty line."""
        if text.endswith("\n"):
            text = text[:-1]
        for line in text.split("\n"):
            self._add(line.removesuffix("\r"))

    def _add(self, line):
        now = time.monotonic()
        if not self._lines:
            self._started = timezone.now()
            self._started_mono = now
        self._lines.append(line)
        self._offsets.append(int((now - self._started_mono) * 1000))
        self._bytes += len(line) + 1
        if len(self._lines) >= self.batch_lines or self._bytes >= self.chunk_bytes or self._due(now):
            self.flush()

    def _due(self, now):
        return bool(self._lines) and now - self._started_mono >= self.batch_seconds

    def poll(self):
        """Flush a batch that has waited long enough, and beat the heartbeat. Cheap: call it often."""
        now = time.monotonic()
        if self._due(now):
            self.flush()
        if now - self._last_beat >= settings.RUN_HEARTBEAT_SECONDS:
            from .services import run_heartbeat

            self._last_beat = now
            run_heartbeat(self.run)

    def flush(self):
        if not self._lines:
            return None
        first = self.next_seq
        chunk = LogChunk.objects.create(
            run_id=self.run.pk,
            first_seq=first,
            last_seq=first + len(self._lines) - 1,
            created_at=self._started,
            text="\n".join(self._lines),
            offsets_ms=",".join(map(str, self._offsets)),
        )
        if self.publish:
            live.publish(self.run.group_name(), batch_message(chunk, self._lines, self._offsets))
        self.next_seq = chunk.last_seq + 1
        self._lines, self._offsets, self._bytes = [], [], 0
        return chunk

    def close(self):
        """Flush what is left and record the line count on the run."""
        self.flush()
        self.closed = True
        Run.objects.filter(pk=self.run.pk).update(log_lines=self.next_seq - 1)
        self.run.log_lines = self.next_seq - 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def batch_message(chunk, lines=None, offsets=None):
    """The Channels message for one batch of lines; consumers forward it to browsers as is."""
    start_ms = int(chunk.created_at.timestamp() * 1000)
    if offsets is None:
        offsets = [int(o) for o in chunk.offsets_ms.split(",")] if chunk.offsets_ms else []
    return {
        "type": "log.lines",
        "run": chunk.run_id,
        "first": chunk.first_seq,
        "lines": lines if lines is not None else chunk.lines(),
        "times": [start_ms + o for o in offsets],
    }


def chunks(run, *, after=0, before=None):
    """The run's chunks holding lines after `after` (and before `before`), in order."""
    qs = LogChunk.objects.filter(run=run, last_seq__gt=after).order_by("first_seq")
    if before is not None:
        qs = qs.filter(first_seq__lt=before)
    return qs


def lines_after(run, after=0, *, limit=None):
    """[(seq, text)] of the stored lines numbered above `after`, oldest first, at most `limit` of them."""
    out = []
    for chunk in chunks(run, after=after).iterator(chunk_size=20):
        for offset, text in enumerate(chunk.lines()):
            seq = chunk.first_seq + offset
            if seq > after:
                out.append((seq, text))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def tail(run, count):
    """[(seq, text)] of the last `count` stored lines, oldest first, reading chunks from the end."""
    picked = []
    total = 0
    for chunk in LogChunk.objects.filter(run=run).order_by("-first_seq").iterator(chunk_size=10):
        picked.append(chunk)
        total += chunk.last_seq - chunk.first_seq + 1
        if total >= count:
            break
    out = []
    for chunk in reversed(picked):
        out.extend((chunk.first_seq + i, text) for i, text in enumerate(chunk.lines()))
    return out[-count:]
