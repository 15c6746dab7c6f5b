"""Thin Celery tasks: load ids, call the pipeline or a service."""

from celery import shared_task


@shared_task(bind=True, max_retries=None)
def build_run(self, build_id):
    """Run one build on its builder (queue `builds`). Waits, re-queued, while its builder is at capacity."""
    from . import pipeline

    wait = pipeline.build_execute(build_id)
    if wait:
        raise self.retry(countdown=wait)


@shared_task
def builds_schedule_due():
    """Beat: start the scheduled (nightly, weekly) rebuilds that are due."""
    from . import services

    return [build.pk for build in services.builds_schedule_due()]


@shared_task
def build_check_builders_health():
    """Beat: ask every enabled builder for `podman version`."""
    from . import services
    from .models import Builder

    return {b.name: services.builder_check_health(builder=b).health_ok for b in Builder.objects.filter(enabled=True)}
