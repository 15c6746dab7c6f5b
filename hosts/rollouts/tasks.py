"""Rollout tasks, on the `hosts` queue. Thin: ids in, the engine and services do the work."""

from celery import shared_task

from . import engine, services


@shared_task(acks_late=True)
def rollout_run(rollout_id):
    return engine.rollout_execute(rollout_id).pk


@shared_task
def rollouts_resume_orphans():
    """Beat: rollouts whose worker died carry on in a new run, from their rows."""
    return [rollout.pk for rollout in services.rollouts_resume_orphans()]


@shared_task
def rollouts_wake_due():
    """Beat: parked rollouts whose time has come carry on (their countdown task may have been lost)."""
    return [rollout.pk for rollout in services.rollouts_wake_due()]
