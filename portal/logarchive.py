"""Archived logs: a finished run's log moved from the database into object storage, and read back from there.

`archive(run)` writes the run's chunks as one gzip object, one member per chunk (so `zcat` reads the whole file, and
a reader can fetch and decompress one member alone), records a `LogArchive` row with the members' byte offsets, and
only then deletes the run's `LogChunk` rows, in the same transaction as the row. An upload that fails leaves the log
in the database as it was; a row that cannot be written deletes the object it uploaded.

`ArchiveReader` gives `portal.logsink`'s readers the same chunks they read from the database (unsaved `LogChunk`
objects), a few members per range request: the viewer, the websocket's backlog, search and the raw download work on an
archived log unchanged, and never hold more than a few chunks of it in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tempfile
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from . import objectstore
from .models import FINISHED_STATUSES, LogArchive, LogChunk, Run
from .registry import StoredFile

log = logging.getLogger(__name__)

PAGE_CHUNKS = 8  # chunks read from the database per query while archiving, and members per range request


def storage():
    return objectstore.aliased("LOG_ARCHIVE_STORAGE")


def archive_of(run) -> LogArchive | None:
    """The run's archive, or None while its log is in the database (no query then: the run says so; one query for
    an archived run, remembered on the run object)."""
    if run.log_archived_at is None:
        return None
    cached = getattr(run, "_portal_log_archive", None)
    if cached is None:
        cached = LogArchive.objects.filter(run_id=run.pk).first()
        run._portal_log_archive = cached
    return cached


def stored_archives():
    """The archived logs' objects, as backups record them (`portal.registry.stored_files`): a backup holds the
    database only, and a restore checks that each of these still exists."""
    for name, size in LogArchive.objects.values_list("name", "size").iterator():
        yield StoredFile(kind="archived run log", storage=settings.LOG_ARCHIVE_STORAGE, name=name, size=size)


def due(*, now=None):
    """Finished runs whose logs are older than LOG_ARCHIVE_AFTER_DAYS and still in the database, oldest first."""
    days = settings.LOG_ARCHIVE_AFTER_DAYS
    if not days:
        return Run.objects.none()
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return (Run.objects.filter(status__in=FINISHED_STATUSES, finished_at__lt=cutoff, log_archived_at__isnull=True)
            .filter(Exists(LogChunk.objects.filter(run=OuterRef("pk")))).order_by("finished_at", "id"))


def archive_due(*, now=None, previous=None) -> dict:
    """Archive the logs `due()` names, at most LOG_ARCHIVE_RUNS_PER_PASS of them. The retention step for logs."""
    limit = settings.LOG_ARCHIVE_RUNS_PER_PASS
    runs = list(due(now=now).values_list("pk", flat=True)[:limit])
    archived, lines, text_bytes, size = 0, 0, 0, 0
    for run_id in runs:
        record = archive(Run.objects.get(pk=run_id))
        if record is not None:
            archived += 1
            lines += record.lines
            text_bytes += record.text_bytes
            size += record.size
    left = due(now=now).count() if len(runs) == limit else 0
    return {"count": archived, "lines": lines, "bytes_removed": text_bytes, "bytes_archived": size, "left": left}


def _member(chunk) -> bytes:
    record = {"first": chunk.first_seq, "last": chunk.last_seq, "at": chunk.created_at.isoformat(),
              "offsets": chunk.offsets_ms, "text": chunk.text}
    return gzip.compress(json.dumps(record, separators=(",", ":")).encode() + b"\n", compresslevel=6, mtime=0)


def _chunks_of(run):
    """The run's chunks from the database, a page at a time (keyset)."""
    qs = LogChunk.objects.filter(run=run).order_by("first_seq")
    after = 0
    while True:
        page = list(qs.filter(first_seq__gt=after)[:PAGE_CHUNKS])
        yield from page
        if len(page) < PAGE_CHUNKS:
            return
        after = page[-1].first_seq


def archive(run) -> LogArchive | None:
    """Move a finished run's log to object storage. Returns the archive row, or None when there was nothing to move
    (no chunks, already archived, or the run is not finished)."""
    if run.status not in FINISHED_STATUSES or run.log_archived_at or LogArchive.objects.filter(run=run).exists():
        return None
    index, lines, text_bytes = [], 0, 0
    digest = hashlib.sha256()
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        offset = 0
        for chunk in _chunks_of(run):
            member = _member(chunk)
            spool.write(member)
            digest.update(member)
            index.append([chunk.first_seq, chunk.last_seq, offset, len(member)])
            offset += len(member)
            lines += chunk.last_seq - chunk.first_seq + 1
            text_bytes += len(chunk.text.encode()) + len(chunk.offsets_ms)
        if not index:
            return None
        spool.seek(0)
        name = f"logs/{run.team_id}/run-{run.pk}-{timezone.now():%Y%m%d%H%M%S}.jsonl.gz"
        target = storage()
        with objectstore.named_errors(f"archive the log of run {run.pk}"):
            saved = target.save(name, File(spool, name=name))
    try:
        with transaction.atomic():
            locked = Run.objects.select_for_update().filter(pk=run.pk).first()
            # Archived meanwhile, or a chunk written since (a run is finished before this starts: none should be):
            # the log stays as it is.
            if (locked is None or LogArchive.objects.filter(run=run).exists()
                    or LogChunk.objects.filter(run=run, first_seq__gt=index[-1][0]).exists()):
                raise _Abandon
            record = LogArchive.objects.create(run=run, name=saved, lines=lines, chunks=len(index),
                                               text_bytes=text_bytes, size=offset, sha256=digest.hexdigest(),
                                               index=index)
            LogChunk.objects.filter(run=run).delete()
            Run.objects.filter(pk=run.pk).update(log_archived_at=record.created_at)
    except BaseException as exc:
        try:
            target.delete(saved)
        except Exception:  # noqa: BLE001 - the row was not written; an orphan object is only space
            log.warning("could not delete %s after archiving the log of run %s failed", saved, run.pk)
        if isinstance(exc, _Abandon):
            return None
        raise
    run.log_archived_at, run._portal_log_archive = record.created_at, record
    return record


class _Abandon(Exception):
    pass


class ArchiveReader:
    """Chunks of an archived log, read from object storage a few members at a time."""

    def __init__(self, record: LogArchive):
        self.record = record
        self.storage = storage()

    def _entries(self, after, before):
        return [entry for entry in self.record.index
                if entry[1] > after and (before is None or entry[0] < before)]

    def _read(self, entries):
        """The members `entries` (consecutive in the file) with one range request, as unsaved LogChunks."""
        start = entries[0][2]
        length = entries[-1][2] + entries[-1][3] - start
        data = objectstore.read_range(self.storage, self.record.name, start, length)
        out = []
        for _first, _last, offset, size in entries:
            piece = gzip.decompress(data[offset - start:offset - start + size])
            record = json.loads(piece)
            out.append(LogChunk(run_id=self.record.run_id, first_seq=record["first"], last_seq=record["last"],
                                created_at=datetime.fromisoformat(record["at"]), text=record["text"],
                                offsets_ms=record["offsets"]))
        return out

    def chunks(self, *, after=0, before=None, reverse=False, page_chunks=PAGE_CHUNKS):
        entries = self._entries(after, before)
        if reverse:
            for end in range(len(entries), 0, -page_chunks):
                yield from reversed(self._read(entries[max(end - page_chunks, 0):end]))
        else:
            for begin in range(0, len(entries), page_chunks):
                yield from self._read(entries[begin:begin + page_chunks])

    def last_seq(self):
        return self.record.index[-1][1] if self.record.index else 0

    def chunk_holding(self, seq):
        entries = [entry for entry in self.record.index if entry[0] <= seq <= entry[1]]
        return self._read(entries)[0] if entries else None
