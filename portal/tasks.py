"""Core periodic tasks. Thin: load ids, call a service."""

from celery import shared_task

from . import services


@shared_task
def reap_stale_runs():
    return [run.pk for run in services.reap_stale_runs()]


@shared_task
def audit_checkpoint():
    checkpoint = services.audit_checkpoint()
    return checkpoint.seq if checkpoint else None
