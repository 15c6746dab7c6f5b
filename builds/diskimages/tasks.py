"""Thin Celery tasks of disk images: load ids, call the pipeline or a service."""

from celery import shared_task

from . import pipeline, services


@shared_task
def disk_image_run(disk_image_id):
    """Run one conversion on its builder. Sent to the builder's queue (`builds.queues`), where it waits its turn."""
    pipeline.disk_image_execute(disk_image_id)


@shared_task
def artifacts_expire():
    """Beat: delete disk image files past their team's retention policy."""
    return services.artifacts_expire()
