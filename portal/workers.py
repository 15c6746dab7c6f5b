"""Which Celery workers are alive, and which queues they consume, from heartbeats the workers write to Redis.

Each worker's main process writes one key, `portal:worker:<name>`, with its queues and concurrency when it starts and
then every WORKER_HEARTBEAT_SECONDS; the key expires after three missed beats, and a worker that stops cleanly deletes
it. Readers (the health endpoint, the check that a build's queue has a consumer) pay one Redis round trip, where a
broadcast ping would wait its whole timeout for replies that may never come.
"""

import json
import logging
import os
import time
from dataclasses import dataclass

from celery import bootsteps
from django.conf import settings

from .redisconn import client

log = logging.getLogger(__name__)

INDEX = "portal:workers"
KEY = "portal:worker:"


@dataclass(frozen=True)
class WorkerBeat:
    name: str
    queues: tuple[str, ...]
    concurrency: int
    pid: int
    beat_at: float  # the worker's clock, seconds since the epoch

    def as_dict(self):
        return {"name": self.name, "queues": list(self.queues), "concurrency": self.concurrency, "pid": self.pid,
                "beat_at": self.beat_at}


def expires_after():
    return 3 * settings.WORKER_HEARTBEAT_SECONDS


def beat(*, name, queues, concurrency, pid=None):
    """Record that worker `name` is alive and consumes `queues`."""
    record = {"queues": sorted(queues), "concurrency": concurrency, "pid": pid or os.getpid(), "beat_at": time.time()}
    pipe = client().pipeline()
    pipe.set(KEY + name, json.dumps(record), ex=max(1, round(expires_after())))
    pipe.sadd(INDEX, name)
    pipe.execute()


def forget(*, name):
    """A worker that stops says so at once, instead of letting its key expire."""
    pipe = client().pipeline()
    pipe.delete(KEY + name)
    pipe.srem(INDEX, name)
    pipe.execute()


def alive():
    """The workers whose last heartbeat has not expired, by name. Raises redis.RedisError when Redis does not answer."""
    redis = client()
    names = sorted(name.decode() for name in redis.smembers(INDEX))
    if not names:
        return []
    records = redis.mget([KEY + name for name in names])
    gone = [name for name, record in zip(names, records, strict=True) if record is None]
    if gone:
        redis.srem(INDEX, *gone)
    workers = []
    for name, record in zip(names, records, strict=True):
        if record is not None:
            data = json.loads(record)
            workers.append(WorkerBeat(name=name, queues=tuple(data["queues"]), concurrency=data["concurrency"],
                                      pid=data["pid"], beat_at=data["beat_at"]))
    return workers


def consumers(queue):
    """The live workers that consume `queue`."""
    return [worker for worker in alive() if queue in worker.queues]


class Heartbeat(bootsteps.StartStopStep):
    """A worker consumer step: beats while the worker consumes tasks (from the consumer's timer, in the main process),
    and forgets the worker when it stops or loses the broker."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, consumer, **kwargs):
        self.timer_entry = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer):
        self._beat(consumer)
        self.timer_entry = consumer.timer.call_repeatedly(settings.WORKER_HEARTBEAT_SECONDS, self._beat, (consumer,))

    def stop(self, consumer):
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
        try:
            forget(name=consumer.hostname)
        except Exception:  # noqa: BLE001 - Redis is gone too: the key expires on its own
            pass

    shutdown = stop

    @staticmethod
    def _beat(consumer):
        queues = [queue.name for queue in consumer.task_consumer.queues] if consumer.task_consumer else []
        try:
            beat(name=consumer.hostname, queues=queues, concurrency=consumer.pool.limit if consumer.pool else 0)
        except Exception as exc:  # noqa: BLE001 - a lost beat is retried at the next one; the worker keeps working
            log.warning("worker heartbeat not written: %s", exc)
