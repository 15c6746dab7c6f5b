"""The Celery app. Queues: hosts and default, plus builds.<arch>, images.<arch> and builder.<id> for builds and
conversions (builds/queues.py). The reasons for each setting are in docs/workers.md."""

import os

from celery import Celery, signals
from kombu import Queue

from . import logcontext  # noqa: F401 - connects the signals that carry the log context to workers
from .startup import require_database, require_storage
from .workers import Heartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
QUEUES = ("hosts", "default")  # the builders' queues are made when first used
app.conf.task_queues = [Queue(name) for name in QUEUES]
app.steps["consumer"].add(Heartbeat)
app.autodiscover_tasks()


@signals.import_modules.connect
def _require_database(**kwargs):
    """In production, a worker or beat that cannot reach its database stops at start-up, with one line (this signal
    comes as they load the task modules, before their banner). So does one whose object storage bucket cannot be reached."""
    require_database()
    require_storage()
