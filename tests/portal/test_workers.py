"""The Celery configuration the portal relies on (docs/workers.md explains each choice)."""

from pathlib import Path

from django.conf import settings

from portal.celery import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "workers.md"


def test_the_fixed_queues_exist_and_builders_queues_are_made_on_first_use():
    assert {q.name for q in app.conf.task_queues} == {"hosts", "default"}
    assert app.conf.task_default_queue == "default"
    assert app.conf.task_create_missing_queues is True  # builds.<arch>, images.<arch>, builder.<id>


def test_tasks_are_acknowledged_after_they_run_and_requeued_if_the_worker_dies():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True


def test_a_worker_takes_one_task_at_a_time_per_process():
    assert app.conf.worker_prefetch_multiplier == 1


def test_the_visibility_timeout_outlasts_the_longest_task():
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility > app.conf.task_time_limit > app.conf.task_soft_time_limit
    assert visibility > settings.RUN_STALE_AFTER.total_seconds()


def test_results_are_not_stored():
    assert app.conf.task_ignore_result is True
    assert not app.conf.result_backend


def test_routes_send_each_kind_of_work_to_its_queue():
    router = app.amqp.router
    # Builds and conversions name their builder's queue when they are sent (tests/builds/test_queues.py).
    assert router.route({"queue": "builds.arm64"}, "builds.tasks.build_run")["queue"].name == "builds.arm64"
    assert router.route({}, "hosts.tasks.host_poll")["queue"].name == "hosts"
    assert router.route({}, "builds.tasks.build_check_builders_health")["queue"].name == "default"
    assert router.route({}, "portal.tasks.reap_stale_runs")["queue"].name == "default"


def test_beat_reaps_stale_runs_every_minute():
    entry = app.conf.beat_schedule["reap-stale-runs"]
    assert entry["task"] == "portal.tasks.reap_stale_runs" and entry["schedule"] == 60.0


def test_the_choices_are_documented():
    text = DOCS.read_text()
    for word in ("acks_late", "task_reject_on_worker_lost", "visibility_timeout", "prefetch", "reaper"):
        assert word in text, word
