"""The Celery app. Queues: hosts and default, plus builds.<arch>, images.<arch> and builder.<id> for builds and
conversions (builds/queues.py). The reasons for each setting are in docs/workers.md."""

import os

from celery import Celery
from kombu import Queue

from .workers import Heartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
QUEUES = ("hosts", "default")  # the builders' queues are made when first used
app.conf.task_queues = [Queue(name) for name in QUEUES]
app.steps["consumer"].add(Heartbeat)
app.autodiscover_tasks()
