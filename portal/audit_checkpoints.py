"""Checkpoints of the audit chain's head, kept outside the database.

The hash chain finds an event that was edited, inserted or deleted in the middle. It cannot find the newest events
deleted from the end: what is left is a shorter chain, whole. So, on a schedule, the head (its number and hash) is
written somewhere the database's users cannot reach; `audit_verify` then checks that every checkpointed event is still
there with the same hash.

Each checkpoint carries an HMAC under AUDIT_HMAC_KEY, so a forged or edited line is found too. The store is a file of
JSON lines, appended to (`AUDIT_CHECKPOINT_PATH`); put it on storage that the database's host and users cannot write,
ideally append-only (a separate volume, `chattr +a`, or a log shipper). Another store (object storage with a retention
lock) only needs the same two methods.
"""

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings


class CheckpointError(Exception):
    """The checkpoint store cannot be read or written, or holds a line that is not a checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str  # ISO 8601, when it was taken
    mac: str = ""

    def signed(self):
        return Checkpoint(self.seq, self.hash, self.at, _mac(self.seq, self.hash, self.at))

    def is_authentic(self):
        return hmac.compare_digest(self.mac, _mac(self.seq, self.hash, self.at))


def _mac(seq, hash_, at):
    message = f"audit-checkpoint:{seq}:{hash_}:{at}".encode()
    return hmac.new(settings.AUDIT_HMAC_KEY.encode(), message, hashlib.sha256).hexdigest()


class FileCheckpoints:
    """Checkpoints as JSON lines in one file, appended to and never rewritten."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, checkpoint):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"seq": checkpoint.seq, "hash": checkpoint.hash, "at": checkpoint.at, "mac": checkpoint.mac})
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as out:
                out.write(line + "\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise CheckpointError(f"cannot write audit checkpoints to {self.path}: {exc.strerror}") from exc

    def all(self):
        """Every checkpoint, oldest first; [] when none was taken yet."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointError(f"cannot read audit checkpoints from {self.path}: {exc.strerror}") from exc
        checkpoints = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                checkpoints.append(Checkpoint(int(data["seq"]), str(data["hash"]), str(data["at"]), str(data["mac"])))
            except (ValueError, KeyError, TypeError):
                raise CheckpointError(f"{self.path} line {number} is not a checkpoint") from None
        return checkpoints

    def last(self):
        checkpoints = self.all()
        return checkpoints[-1] if checkpoints else None


def store():
    """The configured checkpoint store."""
    return FileCheckpoints(settings.AUDIT_CHECKPOINT_PATH)
