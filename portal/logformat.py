"""JSON lines for the log (LOG_FORMAT=json): one object per line, for a log collector to index.

Each line has `time` (UTC, ISO 8601), `level`, `logger`, `message`, `role` (web, worker, beat or the command), `pid`,
and those of `request_id`, `user`, `run_id` and `task_id` that are set (`portal.logcontext`), plus any `extra` a call
gave; `exc_info` holds a traceback. Fields that are not set are left out rather than written as null.
"""

from datetime import UTC, datetime

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

FIELDS = ["asctime", "levelname", "name", "message", "role", "process", "request_id", "user", "run_id", "task_id"]
# Never written: django.request's records carry the request object itself (its id and user are fields already),
# Celery's task lines the task's arguments and return value (`data`), and Python 3.12's task name is asyncio's.
SKIPPED = [*RESERVED_ATTRS, "request", "data", "taskName", "color_message"]


class JsonLines(JsonFormatter):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"})
        kwargs.setdefault("reserved_attrs", SKIPPED)
        super().__init__(FIELDS, *args, **kwargs)

    def formatTime(self, record, datefmt=None):  # noqa: N802 - logging's name
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")

    def process_log_record(self, log_data):
        return {key: value for key, value in log_data.items() if value is not None}
