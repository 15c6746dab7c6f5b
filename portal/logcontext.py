"""What every log line says about where it comes from, so one run can be followed across web, worker and beat.

Four context variables: `request_id` (one per web request: the trusted proxy's X-Request-ID, or a new one; sent back
in the response's X-Request-ID), `user` (who made the request), `task_id` (the Celery task being run, or just sent by
beat) and `run_id` (the run being executed). They are set where each begins:

- web: `request_context` (a middleware, after authentication) binds the request id and the user;
- a task sent while they are bound carries them in its message headers (`before_task_publish`), and the worker binds
  them again with the task id while it runs the task (`task_prerun`), so a worker's lines name the request that asked
  for the work;
- beat logs each task it sends with its id (`after_task_publish`), the id the worker's lines carry;
- the run executor (`portal.runs.executing`) binds the run id while a run's work goes on.

`LogContext` (a logging filter on the console handler) copies them onto every record; the JSON formatter
(`LOG_FORMAT=json`, `portal.logformat.JsonLines`) writes those that are set. Plain text (the default, `make run`) shows
none of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from celery import signals

from .clientip import from_trusted_proxy

log = logging.getLogger(__name__)

FIELDS = ("request_id", "user", "run_id", "task_id")
_vars = {name: contextvars.ContextVar(f"portal_{name}", default=None) for name in FIELDS}
HEADER_PREFIX = "portal_"  # task message headers: portal_request_id, portal_user
PROPAGATED = ("request_id", "user")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def _role(argv):
    """web, agents, worker, beat or the command's name, from how the process was started (`celery -A portal beat`,
    `python -m celery ... worker`, `daphne ...`, `python -m portal.machine_server`, `manage.py NAME`)."""
    program = argv[0] if argv else ""
    if "celery" in program:
        return "beat" if "beat" in argv[1:] else "worker"
    if "daphne" in program or "uvicorn" in program:
        return "web"
    if Path(program).parts[-2:] == ("portal", "machine_server.py"):
        return "agents"
    if Path(program).name == "manage.py" and len(argv) > 1:
        return "web" if argv[1] == "runserver" else argv[1]
    return Path(program).name or "python"


ROLE = _role(sys.argv)


def current() -> dict[str, object]:
    """The bound values, without those that are not set."""
    values = {name: var.get() for name, var in _vars.items()}
    return {name: value for name, value in values.items() if value is not None}


@contextlib.contextmanager
def bound(**values) -> Iterator[None]:
    """Bind these fields (request_id, user, run_id, task_id) for the `with` block, then put back what was there."""
    tokens = [(_vars[name], _vars[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class LogContext(logging.Filter):
    """Copies the bound fields and the process's role onto each record (a record already carrying one keeps it)."""

    def filter(self, record):
        record.role = ROLE
        values = current()
        request = getattr(record, "request", None)  # django.request's records, logged after the middleware returned
        if request is not None and "request_id" not in values:
            values.update(getattr(request, "log_context", {}))
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, values.get(name))
        return True


# --- Web -------------------------------------------------------------------------------------------------------------


def request_id_for(request) -> str:
    """The trusted proxy's X-Request-ID when it sent a sane one, else a new id."""
    presented = request.headers.get("X-Request-ID", "")
    if presented and REQUEST_ID.match(presented) and from_trusted_proxy(request):
        return presented
    return uuid.uuid4().hex


def request_context(get_response):
    """Binds the request id and the user for the request's log lines, and answers with X-Request-ID."""

    def middleware(request):
        user = getattr(request, "user", None)
        request.log_context = {"request_id": request_id_for(request),
                               "user": user.get_username() if user is not None and user.is_authenticated else None}
        with bound(**request.log_context):
            response = get_response(request)
        response["X-Request-ID"] = request.log_context["request_id"]
        return response

    return middleware


# --- Celery ----------------------------------------------------------------------------------------------------------


@signals.before_task_publish.connect
def _carry_context(headers=None, **kwargs):
    """A task sent during a request (or a task) carries its request id and user to the worker."""
    if headers is None:
        return
    for name in PROPAGATED:
        value = _vars[name].get()
        if value is not None:
            headers.setdefault(HEADER_PREFIX + name, value)


@signals.after_task_publish.connect
def _beat_says_what_it_sent(sender=None, headers=None, **kwargs):
    """Beat's own line for each task it sends names the task id its worker's lines carry."""
    if ROLE == "beat" and headers:
        with bound(task_id=headers.get("id")):
            log.info("sent %s", sender)


_task_contexts: dict[str, contextlib.ExitStack] = {}


@signals.task_prerun.connect
def _bind_task(task_id=None, task=None, **kwargs):
    request = task.request if task is not None else None
    values = {}
    if request is not None:
        headers = getattr(request, "headers", None) or {}
        for name in PROPAGATED:  # Celery gives custom headers as attributes of the request (older: in .headers)
            values[name] = getattr(request, HEADER_PREFIX + name, None) or headers.get(HEADER_PREFIX + name)
    stack = contextlib.ExitStack()
    stack.enter_context(bound(task_id=task_id, run_id=None, **values))
    _task_contexts[task_id] = stack


@signals.task_postrun.connect
def _unbind_task(task_id=None, **kwargs):
    stack = _task_contexts.pop(task_id, None)
    if stack is not None:
        with contextlib.suppress(ValueError):  # ended in another thread's context than it began: nothing to undo
            stack.close()
