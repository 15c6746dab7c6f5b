"""Structured logs: with LOG_FORMAT=json every line is one JSON object carrying the request id, the user, the run id and
the task id that were bound where it was written, so one run can be followed from the request that asked for it,
through beat, to the worker that ran it. Plain text stays the default (make run)."""

import copy
import json
import logging.config
import os
import signal
import subprocess
import sys

import pytest
from django.conf import settings
from django.urls import reverse

from builds.models import Build
from builds.queues import local_queues
from portal import logcontext
from tests.builds.fixtures import BASE_IMAGE, WORKER_ENV
from tests.helpers import ROOT, wait_for
from tests.plugins.processes import PortalProcess, subprocess_env


def json_lines(text):
    """The JSON objects of a process's output (Celery's banner and other plain prints are skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture
def logged_as_json(tmp_path):
    """The settings' logging with LOG_FORMAT=json, written to a file; returns a reader of its lines."""
    path = tmp_path / "portal.jsonl"
    config = copy.deepcopy(settings.LOGGING)
    config["handlers"]["console"] = {**config["handlers"]["console"], "class": "logging.FileHandler",
                                     "filename": str(path), "formatter": "json"}
    logging.config.dictConfig(config)
    yield lambda: json_lines(path.read_text())
    logging.config.dictConfig(settings.LOGGING)


def test_plain_text_is_the_default_and_json_is_a_setting():
    # A new process reads the settings as manage.py's would (the same settings module), without starting Django's apps:
    # the formatter is decided there.
    code = ("import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'portal.settings'); "
            "from django.conf import settings as s; print(s.LOGGING['handlers']['console']['formatter'])")
    env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    for extra, expected in (({}, "plain"), ({"LOG_FORMAT": "json"}, "json")):
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **extra}, capture_output=True,
                                text=True, timeout=60)
        assert result.stdout.splitlines()[-1] == expected, result.stderr


def test_the_production_stack_logs_json():
    documented = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                      if line and not line.startswith("#"))
    assert documented["LOG_FORMAT"] == "json"


@pytest.mark.django_db
def test_a_requests_lines_carry_its_id_and_user_and_the_response_says_the_id(client_for, personas, logged_as_json):
    response = client_for(personas.developer).get("/no-such-page/")
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    [line] = [line for line in logged_as_json() if line["logger"] == "django.request"]
    assert line["message"] == "Not Found: /no-such-page/" and line["level"] == "WARNING"
    assert (line["request_id"], line["user"]) == (request_id, "developer")
    assert {"time", "role", "pid"} <= set(line) and "run_id" not in line and "request" not in line


@pytest.mark.django_db
def test_a_request_id_is_taken_from_a_trusted_proxy_only(client, settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    assert client.get("/login/", HTTP_X_REQUEST_ID="proxy-abc-123")["X-Request-ID"] == "proxy-abc-123"
    from_elsewhere = client.get("/login/", HTTP_X_REQUEST_ID="proxy-abc-123", REMOTE_ADDR="203.0.113.9")
    assert from_elsewhere["X-Request-ID"] != "proxy-abc-123"
    unreadable = client.get("/login/", HTTP_X_REQUEST_ID="a b\nc")
    assert len(unreadable["X-Request-ID"]) == 32


def test_the_process_role_comes_from_how_it_was_started():
    assert logcontext._role(["/venv/bin/celery", "-A", "portal", "beat", "-l", "INFO"]) == "beat"
    assert logcontext._role(["/venv/lib/python3.11/site-packages/celery/__main__.py", "-A", "portal", "worker"]) == \
        "worker"
    assert logcontext._role(["/venv/bin/daphne", "-b", "0.0.0.0", "portal.asgi:application"]) == "web"
    assert logcontext._role(["/app/portal/machine_server.py", "--port", "8000"]) == "agents"  # python -m portal.machine_server
    assert logcontext._role(["manage.py", "backup"]) == "backup"


@pytest.mark.slow
def test_a_build_is_followed_from_the_request_that_asked_for_it_to_the_worker_that_ran_it(
    client_for, personas, start_worker, oci_registry, local_builder, build_settings
):
    from builds import services

    worker = start_worker(queues=local_queues()[0], concurrency=1, LOG_FORMAT="json", **WORKER_ENV)
    definition = services.definition_create(team=personas.team, user=personas.developer, name="logged-os")
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]), {
        "containerfile": f"FROM {BASE_IMAGE}\nRUN echo hello\n", "message": "m", "context_kind": "none",
        "and_build": "1"})
    assert response.status_code == 302
    request_id = response["X-Request-ID"]
    build = Build.objects.get()
    wait_for(lambda: Build.objects.get(pk=build.pk).run.is_finished, timeout=90, what="the build to end")
    ended = f"run {build.run.pk} (build) succeeded"
    # The worker writes its line once the run's row says so: the line may reach its output a moment later.
    wait_for(lambda: any(line.get("message") == ended for line in json_lines(worker.output())), timeout=15,
             what="the worker's line saying the run ended")

    lines = json_lines(worker.output())
    of_the_run = [line for line in lines if line.get("run_id") == build.run.pk]
    messages = [line["message"] for line in of_the_run]
    assert f"run {build.run.pk} (build) started: {build.run.title}" in messages
    assert ended in messages
    for line in of_the_run:
        assert (line["request_id"], line["user"], line["role"]) == (request_id, "developer", "worker"), line
    [task_id] = {line["task_id"] for line in of_the_run}
    # Celery's own line about that task carries its id, with the request's.
    [succeeded] = [line for line in lines if line.get("task_id") == task_id and "succeeded in" in line["message"]]
    assert succeeded["request_id"] == request_id and "data" not in succeeded


@pytest.mark.slow
def test_beat_names_each_task_it_sends_and_the_worker_that_runs_it_names_the_same_task(
    start_worker, redis_server, tmp_path, transactional_db
):
    # Beat starts first, and imports the portal while the worker does: what it sends before the worker consumes its
    # queue waits in the broker.
    args = [sys.executable, "-m", "celery", "-A", "portal", "beat", "-l", "INFO", "-s", str(tmp_path / "schedule")]
    beat = PortalProcess("beat", args, subprocess_env(redis_server.url, LOG_FORMAT="json", AUDIT_CHECKPOINT_SECONDS=1),
                         tmp_path)
    try:
        worker = start_worker(queues="default", concurrency=1, LOG_FORMAT="json")

        def sent_and_run():
            sent = {line["task_id"] for line in json_lines(beat.output())
                    if line["message"] == "sent portal.tasks.audit_checkpoint" and line["role"] == "beat"}
            ran = {line.get("task_id") for line in json_lines(worker.output()) if line["role"] == "worker"}
            return sent & ran

        wait_for(sent_and_run, timeout=60, what="a task beat sent, in the worker's lines")
    finally:
        beat.stop(signal.SIGKILL)  # the test is over: no need to wait for an orderly exit
