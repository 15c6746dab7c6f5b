"""Thin Celery tasks of releases: load ids, call the worker's code or a service."""

from celery import shared_task

from . import apply, services


@shared_task
def promotion_apply(run_id):
    """Copy an approved promotion's digest to its stage tag, verify it and record it (queue `default`; needs skopeo)."""
    apply.promotion_apply_execute(run_id)


@shared_task
def promotions_apply_due():
    """Beat: apply approved promotions whose stage takes changes again; fail those whose apply run died."""
    return [promotion.pk for promotion in services.promotions_apply_due()]
