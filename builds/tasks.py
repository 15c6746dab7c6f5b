"""Thin Celery tasks: load ids, call the pipeline or a service."""

from celery import shared_task

from . import cleanup, hygiene, multiarch, pipeline, services
from .models import Builder


@shared_task
def build_run(build_id):
    """Run one build on its builder. Sent to the builder's queue (`builds.queues`), where it waits its turn."""
    pipeline.build_execute(build_id)


@shared_task
def manifest_lists_settle():
    """Beat: a manifest list whose members all ended without a worker settling it (a member cancelled while queued,
    or reaped) is assembled or failed now (`builds.multiarch`)."""
    return multiarch.manifest_lists_settle_due()


@shared_task
def builds_schedule_due():
    """Beat: start the scheduled (nightly, weekly) rebuilds that are due."""
    return [build.pk for build in services.builds_schedule_due()]


@shared_task
def build_check_builders_health():
    """Beat: ask every enabled builder for `podman version`."""
    return {b.name: services.builder_check_health(builder=b).health_ok for b in Builder.objects.filter(enabled=True)}




@shared_task
def image_cleanup_run(cleanup_id):
    """Delete the images a confirmed dry run listed, then collect the registry's garbage (`builds.cleanup`)."""
    cleanup.image_cleanup_execute(cleanup_id)


@shared_task
def builders_prune():
    """Beat: keep each builder's podman store under its budget (`builds.hygiene`)."""
    return hygiene.builders_prune()
