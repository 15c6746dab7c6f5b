"""Thin Celery tasks of disk images: load ids, call the pipeline or a service."""

from celery import shared_task

from . import bootrun, pipeline, services


@shared_task
def disk_image_run(disk_image_id):
    """Run one conversion on its builder. Sent to the builder's queue (`builds.queues`), where it waits its turn."""
    pipeline.disk_image_execute(disk_image_id)


@shared_task
def boot_test_run(boot_test_id):
    """Boot one digest in a throwaway VM. Routed to BOOT_TEST_QUEUE, whose workers' concurrency limits the VMs."""
    bootrun.boot_test_execute(boot_test_id)


@shared_task
def boot_test_reap():
    """Beat, on the boot-test queue: kill and remove what boot tests whose worker died left on this machine."""
    return bootrun.reap_leftovers()


@shared_task
def artifacts_expire():
    """Beat: delete disk image files past their team's retention policy."""
    return services.artifacts_expire()
