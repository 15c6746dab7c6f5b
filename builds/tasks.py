"""Thin Celery tasks: load ids, call the pipeline or a service."""

from celery import shared_task


@shared_task
def build_run(build_id):
    """Run one build on its builder. Sent to the builder's queue (`builds.queues`), where it waits its turn."""
    from . import pipeline

    pipeline.build_execute(build_id)


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


# --- Promotions and notifications (docs/promotions.md) ---------------------------------------------------------------


@shared_task
def promotion_apply(run_id):
    """Copy an approved promotion's digest to its stage tag, verify it and record it (queue `default`; needs skopeo)."""
    from .promotion_apply import promotion_apply_execute

    promotion_apply_execute(run_id)


@shared_task
def promotions_apply_due():
    """Beat: apply approved promotions whose stage takes changes again; fail those whose apply run died."""
    from . import promotions

    return [promotion.pk for promotion in promotions.promotions_apply_due()]


@shared_task(bind=True, max_retries=5, default_retry_delay=60)
def notification_email(self, subject, body, recipients):
    """Send one notification email; an SMTP server that is down is tried again later."""
    from . import notifications

    try:
        notifications.email_send(subject=subject, body=body, recipients=recipients)
    except OSError as exc:  # smtplib's errors are OSErrors
        raise self.retry(exc=exc, countdown=60 * 2 ** self.request.retries) from exc


@shared_task(bind=True, max_retries=None)
def webhook_deliver(self, delivery_id):
    """One attempt of a webhook delivery; the next is scheduled with backoff until it is delivered or given up."""
    from . import notifications

    wait = notifications.webhook_attempt(delivery_id=delivery_id)
    if wait is not None:
        raise self.retry(countdown=wait)


@shared_task
def webhook_deliveries_due():
    """Beat: deliveries whose retry was lost (a restarted worker) or never enqueued are sent again."""
    from . import notifications

    return notifications.webhook_deliveries_due()
