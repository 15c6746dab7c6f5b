"""Thin Celery tasks: load ids, call the pipeline or a service."""

from celery import shared_task

from . import pipeline, promotions, services
from .models import Builder
from .promotion_apply import promotion_apply_execute


@shared_task
def build_run(build_id):
    """Run one build on its builder. Sent to the builder's queue (`builds.queues`), where it waits its turn."""
    pipeline.build_execute(build_id)


@shared_task
def builds_schedule_due():
    """Beat: start the scheduled (nightly, weekly) rebuilds that are due."""
    return [build.pk for build in services.builds_schedule_due()]


@shared_task
def build_check_builders_health():
    """Beat: ask every enabled builder for `podman version`."""
    return {b.name: services.builder_check_health(builder=b).health_ok for b in Builder.objects.filter(enabled=True)}


# --- Promotions (docs/promotions.md) ----------------------------------------------------------------------------------


@shared_task
def promotion_apply(run_id):
    """Copy an approved promotion's digest to its stage tag, verify it and record it (queue `default`; needs skopeo)."""
    promotion_apply_execute(run_id)


@shared_task
def promotions_apply_due():
    """Beat: apply approved promotions whose stage takes changes again; fail those whose apply run died."""
    return [promotion.pk for promotion in promotions.promotions_apply_due()]
