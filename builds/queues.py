"""The Celery queue each build and conversion waits in, and the queues a builder's worker consumes (docs/workers.md).

A builder's capacity is the concurrency of the workers that consume its queue: a task waits in the broker, first in,
first out, until one of their processes is free. Nothing counts running builds in the database.

- `builds.<arch>` and `images.<arch>`: builds and conversions on local builders (the worker's own podman) of that
  architecture, consumed by workers on machines of that architecture.
- `builder.<id>`: builds and conversions of one remote (SSH) builder, consumed by the worker that serves it, whose
  concurrency is the builder's capacity (`manage.py builder_worker NAME` starts it).
"""

import platform as host_platform

from portal import workers

from .models import Builder, BuilderKind


def local_architecture() -> str:
    machine = host_platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


def build_queue(builder: Builder) -> str:
    if builder.kind == BuilderKind.SSH:
        return f"builder.{builder.pk}"
    return f"builds.{builder.architecture}"


def conversion_queue(builder: Builder) -> str:
    if builder.kind == BuilderKind.SSH:
        return f"builder.{builder.pk}"
    return f"images.{builder.architecture}"


def worker_queues(builder: Builder) -> list[str]:
    """What a worker serving `builder` consumes."""
    return sorted({build_queue(builder), conversion_queue(builder)})


def local_queues() -> list[str]:
    """The build and conversion queues of this machine's own architecture (what `make run`'s worker adds)."""
    return [f"builds.{local_architecture()}", f"images.{local_architecture()}"]


def unserved(builder: Builder, queue: str, what: str) -> str:
    """Why a task for `builder` cannot wait in `queue`: no live worker consumes it."""
    if builder.kind == BuilderKind.SSH:
        return (f"No worker serves builder {builder.name} (queue {queue}), so {what} would wait forever. Start one "
                f"with `manage.py builder_worker {builder.name}` (its concurrency is the builder's capacity, "
                f"{builder.capacity}), then retry.")
    return (f"No worker takes {what}s for {builder.architecture} (queue {queue}), so this one would wait forever. "
            f"Start one on a machine of that architecture with podman (`manage.py builder_worker {builder.name}`), "
            "then retry.")



def served() -> set[str] | None:
    """The queues live workers consume, from their heartbeats; None when Redis does not answer (sending the task then
    fails and says so)."""
    try:
        return {queue for worker in workers.alive() for queue in worker.queues}
    except Exception:  # noqa: BLE001
        return None


def serving(builders) -> dict[int, list] | None:
    """{builder id: the live workers that consume its queues}; None when Redis does not answer."""
    try:
        live = workers.alive()
    except Exception:  # noqa: BLE001
        return None
    return {b.pk: [w for w in live if set(worker_queues(b)) & set(w.queues)] for b in builders}
