"""Thin Celery tasks: load ids, call the pipeline or a service."""

from celery import shared_task


@shared_task(bind=True, max_retries=None)
def build_run(self, build_id):
    """Run one build on its builder (queue `builds`). Waits, re-queued, while its builder is at capacity."""
    from . import pipeline

    wait = pipeline.build_execute(build_id)
    if wait:
        raise self.retry(countdown=wait)
