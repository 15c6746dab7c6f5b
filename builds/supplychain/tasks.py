"""Thin Celery tasks of the supply chain: load ids, call the worker's code."""

from celery import shared_task

from . import signing


@shared_task
def signature_run(run_id):
    """Sign a digest with a team key (queue `default`; needs skopeo)."""
    signing.signature_execute(run_id)
