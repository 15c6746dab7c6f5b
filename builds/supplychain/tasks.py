"""Thin Celery tasks of the supply chain: load ids, call the worker's code."""

from celery import shared_task

from . import feeds, resigning, signing


@shared_task
def signature_run(run_id):
    """Sign a digest with a team key (queue `default`; needs skopeo)."""
    signing.signature_execute(run_id)


@shared_task
def key_rotation_run(run_id):
    """Re-sign every digest in use with a rotation's new key (queue `default`; needs skopeo)."""
    resigning.key_rotation_execute(run_id)


@shared_task
def key_rotations_retire_due():
    """Beat: retire the old keys of rotations whose date has come."""
    resigning.key_rotations_retire_due()


@shared_task
def advisory_feeds_refresh_due():
    """Beat: read the advisory feeds whose URL is due (queue `default`)."""
    feeds.feeds_refresh_due()
