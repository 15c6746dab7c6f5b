"""The log sink: every run's output goes through here, and every reader of a run's log reads through here.

Lines are numbered 1, 2, 3... and buffered; a batch is written as one `LogChunk` row (one INSERT, never one per line) when
it holds RUN_LOG_BATCH_LINES lines or RUN_LOG_CHUNK_BYTES characters, or when its oldest line has waited
RUN_LOG_BATCH_SECONDS. A line that comes after a quiet spell (nothing flushed for RUN_LOG_BATCH_SECONDS) is written at
once: a slow build's lines show without waiting, a burst still goes out in batches. The same batch is then published to
the run's Channels group. Lines that start a section (see
`portal.logtext`) are recorded as `LogSection` rows with their chunk.

A line is stored as a terminal would show it (a carriage return rewrites the line; a NUL byte, which PostgreSQL text
cannot hold, shows as U+FFFD like any undecodable byte) and is at most RUN_LOG_LINE_MAX_CHARS long, so no chunk ever
outgrows about twice the chunk size. Readers (`chunks`, `lines_between`, `tail_lines`, `search`, `raw`) read a few chunks
at a time: the memory a reader needs is bounded by the chunk size, never by the log's size.

A sink has one writer. Whoever feeds it from a stream that may go quiet calls `poll()` every so often (the runners do, from
their select loop), which flushes a batch that is due and beats the run's heartbeat. Whoever reads a process's output
as bytes turns it into lines with `LineSplitter`, in linear time and with each line at most the sink's limit.
"""

import json
import time
import zlib

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from . import live, logarchive
from .logtext import SectionDetector, cap_line, cut_for_display, strip_ansi, terminal_line
from .models import LogChunk, LogSection, Run
from .services import run_heartbeat

# Sections recorded per run at most: a log that prints "STEP 1/2:" a million times gets an outline of useful size.
MAX_SECTIONS = 2000
REPLACEMENT_UTF8 = "\ufffd".encode()


class LineSplitter:
    """Bytes in, whole lines of storable text out, in time linear in the bytes (each byte is looked at once, whatever
    the lines' lengths).

    A carriage return also ends a line (progress output), unless `carriage_return_ends_line=False`: then the sink
    keeps what a terminal would show of the line (its last non-empty part). A NUL or a byte that is not UTF-8 becomes
    U+FFFD. A line longer than `max_bytes` (by default RUN_LOG_LINE_MAX_CHARS, the sink's own limit) is given out as
    soon as it passes the limit, cut at a character boundary and marked (mark included, it is at most `max_bytes`
    long), and the rest of it is dropped as it arrives: a command that prints a gigabyte without a newline costs the
    worker `max_bytes` of memory, not a gigabyte.
    """

    def __init__(self, max_bytes: int | None = None, *, carriage_return_ends_line: bool = True):
        self.max_bytes = max_bytes or settings.RUN_LOG_LINE_MAX_CHARS
        self.cr_ends_line = carriage_return_ends_line
        self._parts: list[bytes] = []  # the line so far, at most max_bytes in all
        self.buffered = 0
        self._dropping = False  # the current line was cut: drop the rest of it
        self._after_cr = False  # the last read ended with \r: a \n first in the next read ends no line
        self._cut = None  # a line cut during this read, given out with it

    def feed(self, data: bytes) -> list[str]:
        if not data:
            return []
        if self._dropping and b"\n" not in data and (b"\r" not in data or not self.cr_ends_line):
            self._after_cr = False
            return []  # more of a line that was cut already
        if self.cr_ends_line:
            if self._after_cr and data.startswith(b"\n"):
                data = data[1:]
            self._after_cr = data.endswith(b"\r")
            # One pass each, in C, over the whole read: line ends made \n, NUL made U+FFFD (PostgreSQL cannot hold it).
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            data = data.replace(b"\r\n", b"\n")
        if b"\x00" in data:
            data = data.replace(b"\x00", REPLACEMENT_UTF8)
        first = data.find(b"\n")
        if first < 0:
            self._add(data)
            return self._cut_lines()
        last = data.rfind(b"\n")
        lines = []
        if not self._dropping:
            self._add(data[:first])
            lines += self._cut_lines()
        if not self._dropping:
            lines.append(b"".join(self._parts).decode("utf-8", "replace"))
        self._parts, self.buffered, self._dropping = [], 0, False
        if last > first:  # whole lines between the first and the last line end
            middle = data[first + 1:last]
            if len(middle) <= self.max_bytes:  # the usual case: decoded at once (a \n is never inside a character)
                lines += middle.decode("utf-8", "replace").split("\n")
            else:
                lines += [piece.decode("utf-8", "replace") if len(piece) <= self.max_bytes else self._marked(piece)
                          for piece in middle.split(b"\n")]
        self._add(data[last + 1:])
        if self._cut is not None:
            lines += self._cut_lines()
        return lines

    def _add(self, piece: bytes):
        if not piece or self._dropping:
            return
        room = self.max_bytes - self.buffered
        if len(piece) <= room:
            self._parts.append(piece)
            self.buffered += len(piece)
            return
        self._cut = self._marked(b"".join(self._parts) + piece[:room])
        self._parts, self.buffered, self._dropping = [], 0, True

    def _cut_lines(self) -> list[str]:
        """The line just cut, if any (given out at once, so a viewer sees it before its end ever comes)."""
        cut, self._cut = self._cut, None
        return [cut] if cut is not None else []

    def _marked(self, data: bytes) -> str:
        """The start of a line that is too long, and a mark saying so: at most max_bytes characters in all, so the log
        sink, whose limit it is, stores it as it is."""
        mark = f" [… cut: the line is longer than {self.max_bytes:,} bytes; the rest of it is not kept]"
        kept = _whole_characters(data[:max(self.max_bytes - len(mark), 0)]).decode("utf-8", "replace")
        return kept + mark

    def rest(self) -> list[str]:
        parts, dropping = self._parts, self._dropping
        self._parts, self.buffered, self._dropping, self._after_cr = [], 0, False, False
        return [b"".join(parts).decode("utf-8", "replace")] if parts and not dropping else []


def _whole_characters(data: bytes) -> bytes:
    """`data` without a UTF-8 character cut short at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data  # ASCII: nothing open
        if byte >= 0xC0:  # the lead byte of the last character: is the character whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


class LogSink:
    def __init__(self, run, *, publish=True):
        self.run = run
        self.publish = publish
        self.batch_lines = settings.RUN_LOG_BATCH_LINES
        self.batch_seconds = settings.RUN_LOG_BATCH_SECONDS
        self.chunk_bytes = settings.RUN_LOG_CHUNK_BYTES
        self.line_max = settings.RUN_LOG_LINE_MAX_CHARS
        last = LogChunk.objects.filter(run=run).aggregate(last=Max("last_seq"))["last"] or 0
        self.next_seq = last + 1
        self.sections_left = MAX_SECTIONS - LogSection.objects.filter(run=run).count()
        self.detector = SectionDetector()
        self._lines = []
        self._offsets = []
        self._sections = []  # (seq, kind, title, offset_ms) of section lines in the current batch
        self._bytes = 0
        self._started = None  # wall clock of the batch's first line
        self._started_mono = 0.0
        self._last_beat = self._last_flush = time.monotonic()
        self.closed = False

    @property
    def last_seq(self):
        """The number of the last line written (flushed or buffered)."""
        return self.next_seq - 1 + len(self._lines)

    def write(self, text):
        """Add one line, or several separated by newlines. A trailing newline does not make an empty line."""
        if text.endswith("\n"):
            text = text[:-1]
        if "\n" not in text:
            self._add(text)
            return
        for line in text.split("\n"):
            self._add(line)

    def _add(self, line):
        if "\r" in line:
            line = terminal_line(line)
        if "\x00" in line:
            line = line.replace("\x00", "\ufffd")
        if len(line) > self.line_max:
            line = cap_line(line, self.line_max)
        now = time.monotonic()
        if not self._lines:
            self._started = timezone.now()
            self._started_mono = now
        offset = int((now - self._started_mono) * 1000)
        section = self.detector.feed(line)
        if section is not None and self.sections_left > 0:
            self.sections_left -= 1
            self._sections.append((self.next_seq + len(self._lines), section[0], section[1], offset))
        self._lines.append(line)
        self._offsets.append(offset)
        self._bytes += len(line) + 1
        if (len(self._lines) >= self.batch_lines or self._bytes >= self.chunk_bytes
                or now - self._started_mono >= self.batch_seconds
                or (len(self._lines) == 1 and now - self._last_flush >= self.batch_seconds)):
            self.flush()

    def _due(self, now):
        return bool(self._lines) and now - self._started_mono >= self.batch_seconds

    def poll(self):
        """Flush a batch that has waited long enough, and beat the heartbeat. Cheap: call it often."""
        now = time.monotonic()
        if self._due(now):
            self.flush()
        if now - self._last_beat >= settings.RUN_HEARTBEAT_SECONDS:
            self._last_beat = now
            run_heartbeat(self.run)

    def flush(self):
        if not self._lines:
            return None
        first = self.next_seq
        chunk = LogChunk(
            run_id=self.run.pk,
            first_seq=first,
            last_seq=first + len(self._lines) - 1,
            created_at=self._started,
            text="\n".join(self._lines),
            offsets_ms=",".join(map(str, self._offsets)),
        )
        sections = [
            LogSection(run_id=self.run.pk, seq=seq, kind=kind, title=title,
                       started_at=self._started + timezone.timedelta(milliseconds=offset))
            for seq, kind, title, offset in self._sections
        ]
        if sections:
            with transaction.atomic():
                chunk.save(force_insert=True)
                LogSection.objects.bulk_create(sections)
        else:
            chunk.save(force_insert=True)
        if self.publish:
            live.publish(self.run.group_name(), batch_message(chunk, self._lines, self._offsets, sections))
        self.next_seq = chunk.last_seq + 1
        self._lines, self._offsets, self._sections, self._bytes = [], [], [], 0
        self._last_flush = time.monotonic()
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


# --- Messages --------------------------------------------------------------------------------------------------------


def _ms(when):
    return int(when.timestamp() * 1000)


def section_entry(section):
    """[seq, kind, title, started_at in ms since the epoch]: how the viewer receives a section."""
    return [section.seq, section.kind, section.title, _ms(section.started_at)]


def lines_message(first, lines, times, sections=()):
    """The viewer's message for consecutive lines from `first`: long lines cut for display, with the sections they start.

    {"t": "lines", "first": N, "lines": [...], "times": [ms, ...], "sections": [[seq, kind, title, ms], ...],
     "cut": [[seq, full length], ...]}   ("sections" and "cut" only when there are any)
    """
    lines, cut = cut_for_display(lines, first, settings.RUN_LOG_DISPLAY_LINE_CHARS)
    message = {"t": "lines", "first": first, "lines": lines, "times": times}
    if sections:
        message["sections"] = [entry if isinstance(entry, list) else section_entry(entry) for entry in sections]
    if cut:
        message["cut"] = cut
    return message


def batch_message(chunk, lines=None, offsets=None, sections=None):
    """The Channels message for one batch of lines: {"type", "run", "first", "last", "json"}, where "json" is the viewer's
    "lines" message, serialised once here rather than once per viewer in the web process."""
    start_ms = _ms(chunk.created_at)
    if offsets is None:
        offsets = [int(o) for o in chunk.offsets_ms.split(",")] if chunk.offsets_ms else []
    if lines is None:
        lines = chunk.lines()
    if sections is None:
        sections = list(LogSection.objects.filter(run_id=chunk.run_id, seq__gte=chunk.first_seq, seq__lte=chunk.last_seq))
    viewer_message = lines_message(chunk.first_seq, lines, [start_ms + o for o in offsets], sections)
    return {"type": "log.lines", "run": chunk.run_id, "first": chunk.first_seq, "last": chunk.last_seq,
            "json": json.dumps(viewer_message, separators=(",", ":"))}


def merge_batch_messages(messages):
    """Channels messages in the order they came, with each run of consecutive "log.lines" batches (each starting right
    after the one before) made into one batch message: what a web process hands its sockets when batches queued up
    while it was busy. Any other message, or a gap in the numbering, ends the run of batches."""
    out = []
    pending = []  # consecutive batches not yet merged

    def close_pending():
        if len(pending) == 1:
            out.append(pending[0])
        elif pending:
            merged = {"t": "lines", "first": pending[0]["first"], "lines": [], "times": []}
            for batch in pending:
                viewer_message = json.loads(batch["json"])
                merged["lines"] += viewer_message["lines"]
                merged["times"] += viewer_message["times"]
                for key in ("sections", "cut"):
                    if key in viewer_message:
                        merged.setdefault(key, []).extend(viewer_message[key])
            out.append({**pending[0], "last": pending[-1]["last"], "json": json.dumps(merged, separators=(",", ":"))})
        pending.clear()

    for message in messages:
        if message.get("type") == "log.lines" and (not pending or message["first"] == pending[-1]["last"] + 1):
            pending.append(message)
            continue
        close_pending()
        if message.get("type") == "log.lines":
            pending.append(message)
        else:
            out.append(message)
    close_pending()
    return out


# --- Readers ---------------------------------------------------------------------------------------------------------


# Chunks fetched per query by the readers. Each query is bounded (no server-side cursor: on PostgreSQL, Django's
# iterator() outside a transaction declares a cursor WITH HOLD, which materialises the whole result first).
PAGE_CHUNKS = 8


def chunks(run, *, after=0, before=None):
    """The run's chunks in the database holding lines after `after` (and before `before`), in order, as a QuerySet.
    Readers that must also read archived logs use `each_chunk`."""
    qs = LogChunk.objects.filter(run=run, last_seq__gt=after).order_by("first_seq")
    if before is not None:
        qs = qs.filter(first_seq__lt=before)
    return qs


def each_chunk(run, *, after=0, before=None, reverse=False, fields=None, page_chunks=PAGE_CHUNKS):
    """The chunks holding lines after `after` and before `before`, read `page_chunks` at a time (keyset pagination), in
    order (or from the end with `reverse`). Memory: a page of chunks, whatever the log's size. An archived log's chunks
    come from object storage, a page per range request (`portal.logarchive`)."""
    record = logarchive.archive_of(run)
    if record is not None:
        yield from logarchive.ArchiveReader(record).chunks(after=after, before=before, reverse=reverse,
                                                           page_chunks=page_chunks)
        return
    qs = chunks(run, after=after, before=before)
    if fields:
        qs = qs.only(*fields)
    qs = qs.order_by("-first_seq") if reverse else qs
    while True:
        page = list(qs[:page_chunks])
        yield from page
        if len(page) < page_chunks:
            return
        qs = qs.filter(first_seq__lt=page[-1].first_seq) if reverse else qs.filter(first_seq__gt=page[-1].first_seq)


def last_seq(run):
    """The number of the last stored line (0 when there is none): one index lookup."""
    record = logarchive.archive_of(run)
    if record is not None:
        return logarchive.ArchiveReader(record).last_seq()
    value = LogChunk.objects.filter(run=run).order_by("-first_seq").values_list("last_seq", flat=True).first()
    return value or 0


def sections(run, *, after=0, before=None):
    qs = LogSection.objects.filter(run=run, seq__gt=after)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    return qs.order_by("seq")


def _slice(chunk, after, before):
    """(first, lines, times) of the chunk's lines numbered after `after` and before `before`."""
    start_ms = _ms(chunk.created_at)
    offsets = [int(o) for o in chunk.offsets_ms.split(",")] if chunk.offsets_ms else []
    lines = chunk.lines()
    lo = max(after + 1 - chunk.first_seq, 0)
    hi = len(lines) if before is None else max(min(before - chunk.first_seq, len(lines)), 0)
    times = [start_ms + (offsets[i] if i < len(offsets) else 0) for i in range(lo, hi)]
    return chunk.first_seq + lo, lines[lo:hi], times


def lines_between(run, *, after=0, before=None, limit=1000, from_end=False):
    """(first, lines, times) of at most `limit` consecutive stored lines numbered after `after` and before `before`:
    the first ones of that range, or the last ones with `from_end`. Reads only the chunks it needs."""
    picked, count = [], 0
    for chunk in each_chunk(run, after=after, before=before, reverse=from_end):
        first, lines, times = _slice(chunk, after, before)
        if not lines:
            continue
        picked.append((first, lines, times))
        count += len(lines)
        if count >= limit:
            break
    if from_end:
        picked.reverse()
    if not picked:
        return after + 1, [], []
    first = picked[0][0]
    lines = [line for _, part, _ in picked for line in part]
    times = [t for _, _, part in picked for t in part]
    if len(lines) > limit:
        if from_end:
            drop = len(lines) - limit
            first, lines, times = first + drop, lines[drop:], times[drop:]
        else:
            lines, times = lines[:limit], times[:limit]
    return first, lines, times


def lines_after(run, after=0, *, limit=None):
    """[(seq, text)] of the stored lines numbered above `after`, oldest first, at most `limit` of them."""
    out = []
    for chunk in each_chunk(run, after=after):
        for offset, text in enumerate(chunk.lines()):
            seq = chunk.first_seq + offset
            if seq > after:
                out.append((seq, text))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def tail(run, count):
    """[(seq, text)] of the last `count` stored lines, oldest first, reading chunks from the end."""
    first, lines, _ = lines_between(run, limit=count, from_end=True)
    return [(first + i, text) for i, text in enumerate(lines)]


def line(run, seq):
    """The full stored text of line `seq`, or None."""
    record = logarchive.archive_of(run)
    if record is not None:
        chunk = logarchive.ArchiveReader(record).chunk_holding(seq)
    else:
        chunk = LogChunk.objects.filter(run=run, first_seq__lte=seq, last_seq__gte=seq).only("first_seq", "text").first()
    if chunk is None:
        return None
    return chunk.lines()[seq - chunk.first_seq]


def raw(run, *, compressed=False):
    """The whole log as bytes, chunk by chunk (gzip-compressed on the fly with `compressed`): for streaming responses."""

    def plain():
        for chunk in each_chunk(run, fields=("first_seq", "text"), page_chunks=16):
            yield (chunk.text + "\n").encode()

    if not compressed:
        return plain()

    def gzipped():
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        for block in plain():
            out = compressor.compress(block)
            if out:
                yield out
        yield compressor.flush()

    return gzipped()


# --- Search ----------------------------------------------------------------------------------------------------------

SEARCH_MAX_QUERY = 200


def search(run, query, *, after=0, max_positions=10_000):
    """Case-insensitive search of the whole stored log, ignoring ANSI colours.

    Returns {"count": lines that match (exact, over the whole log), "seqs": the first `max_positions` matching line
    numbers after `after`}. Reads the log a few chunks at a time.
    """
    if logarchive.archive_of(run) is not None:
        return _search(each_chunk(run, page_chunks=32), query.casefold(), after, max_positions)
    with transaction.atomic():  # a streaming cursor (inside a transaction, PostgreSQL's is not materialised WITH HOLD)
        return _search(chunks(run).only("first_seq", "last_seq", "text").iterator(chunk_size=16), query.casefold(),
                       after, max_positions)


def _search(stream, needle, after, max_positions):
    count = 0
    seqs = []
    for chunk in stream:
        text = chunk.text
        if "\x1b" in text:
            text = strip_ansi(text)
        haystack = text.lower() if text.isascii() else text.casefold()
        hits = haystack.count(needle)
        if not hits:
            continue
        want = chunk.last_seq > after and len(seqs) < max_positions
        if len(haystack) != len(text) or hits > 8:
            # Many hits (or casefold changed lengths, ß -> ss): test line by line, which C does fast.
            lines = haystack.split("\n") if len(haystack) == len(text) else [one.casefold() for one in text.split("\n")]
            if not want:
                count += sum(1 for one in lines if needle in one)
                continue
            matching = [i for i, one in enumerate(lines) if needle in one]
            count += len(matching)
            seqs.extend(seq for i in matching if (seq := chunk.first_seq + i) > after)
            del seqs[max_positions:]
            continue
        position = haystack.find(needle)
        line_index, scanned = 0, 0
        while position >= 0:
            line_index += haystack.count("\n", scanned, position)
            count += 1
            seq = chunk.first_seq + line_index
            if want and seq > after and len(seqs) < max_positions:
                seqs.append(seq)
            end_of_line = haystack.find("\n", position + len(needle))
            if end_of_line < 0:
                break
            # `scanned` sits on the newline ending the matched line: counting from it moves past that line.
            scanned = end_of_line
            position = haystack.find(needle, end_of_line + 1)
    return {"count": count, "seqs": seqs}
