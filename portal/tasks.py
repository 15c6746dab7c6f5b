"""Core periodic tasks. Thin: load ids, call a service."""

from celery import shared_task

from . import notifications, retention, services


@shared_task
def reap_stale_runs():
    return [run.pk for run in services.reap_stale_runs()]


@shared_task
def retention_due():
    """Hourly: a retention pass when the last one is RETENTION_EVERY_HOURS old (portal/retention.py)."""
    record = retention.retention_due()
    return record.pk if record else None


@shared_task
def audit_checkpoint():
    checkpoint = services.audit_checkpoint()
    return checkpoint.seq if checkpoint else None


# --- Notifications (portal/notifications.py) -------------------------------------------------------------------------


@shared_task(bind=True, max_retries=5, default_retry_delay=60)
def notification_email(self, subject, body, recipients):
    """Send one notification email; an SMTP server that is down is tried again later."""
    try:
        notifications.email_send(subject=subject, body=body, recipients=recipients)
    except OSError as exc:  # smtplib's errors are OSErrors
        raise self.retry(exc=exc, countdown=60 * 2 ** self.request.retries) from exc


@shared_task(bind=True, max_retries=None)
def webhook_deliver(self, delivery_id):
    """One attempt of a webhook delivery; the next is scheduled with backoff until it is delivered or given up."""
    wait = notifications.webhook_attempt(delivery_id=delivery_id)
    if wait is not None:
        raise self.retry(countdown=wait)


@shared_task
def webhook_deliveries_due():
    """Beat: deliveries whose retry was lost (a restarted worker) or never enqueued are sent again."""
    return notifications.webhook_deliveries_due()

