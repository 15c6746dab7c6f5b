"""Notifications: emails to the right people with a deep link, signed webhooks whose signature verifies with the
documented method, retries with backoff and the delivery log; and the whole path through a real Celery worker."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.urls import reverse

from builds.models import BuildEvent
from builds.notifications import notify_build_failed
from builds.releases import services as promotions
from builds.releases.models import Promotion, PromotionEvent, PromotionStatus, StageHistory
from portal import notifications
from portal.models import DeliveryStatus, WebhookDelivery
from tests.helpers import allow_egress, free_port, wait_for
from tests.releases.fixtures import stage_digest

pytestmark = pytest.mark.django_db


class Receiver:
    """A real HTTP server on loopback that records deliveries and answers with the next of `codes` (then 200), with
    `reason` as the status line's reason phrase if given."""

    def __init__(self, codes=(), reason=None):
        self.codes = list(codes)
        self.requests = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code, reason)
                self.end_headers()
                self.wfile.write(b"ok" if code < 300 else b"try later")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        # stop()'s shutdown() returns at serve_forever's next poll: every 50 ms, not every half second
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """start(codes) -> a Receiver, allowed by the egress policy for the test's length."""
    started = []

    def start(codes=(), reason=None):
        r = Receiver(codes, reason)
        started.append((r, allow_egress(f"127.0.0.1:{r.server.server_address[1]}")))
        return r

    yield start
    for r, disallow in started:
        r.stop()
        disallow()


def documented_verify(secret, headers, body):
    """The verification method of docs/promotions.md, written out independently of the portal's code."""
    timestamp = headers["X-Portal-Timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["X-Portal-Signature-256"])


def ready_for_test(promo):
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=promo.builds[0].digest,
                                build=promo.builds[0])


def ask_for_test(promo):
    """The developer asks for the first build to go to test."""
    return promotions.promotion_request(definition=promo.definition, build=promo.builds[0],
                                        target_stage=promo.stages["test"], user=promo.personas.developer,
                                        reason="ready")


# --- Email -----------------------------------------------------------------------------------------------------------


def test_approval_requested_mails_those_who_may_approve_with_a_deep_link(promo, eager_tasks, mailoutbox,
                                                                        django_capture_on_commit_callbacks):
    ready_for_test(promo)
    with django_capture_on_commit_callbacks(execute=True):
        promotion = promotions.promotion_request(definition=promo.definition, build=promo.builds[0],
                                                 target_stage=promo.stages["test"], user=promo.personas.developer,
                                                 reason="ready for QA")
    recipients = sorted(m.to[0] for m in mailoutbox)
    assert recipients == ["approver2@example.com", "approver@example.com", "teamadmin@example.com"]
    mail = mailoutbox[0]
    assert "Approval requested" in mail.subject and "web-os" in mail.subject
    assert settings.SITE_URL.rstrip("/") + reverse("releases:promotion_detail", args=[promotion.pk]) in mail.body
    assert "ready for QA" in mail.body


def test_the_requester_hears_of_the_decision_and_the_application(promo, eager_tasks, mailoutbox,
                                                                 django_capture_on_commit_callbacks):
    promo.push()
    ready_for_test(promo)
    promotion = ask_for_test(promo)
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):  # the apply task runs in-process, eagerly
        promotions.promotion_approve(promotion=promotion, user=promo.personas.approver, digest=promotion.digest)
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.APPLIED
    subjects = sorted((m.to[0], m.subject.split(":")[0]) for m in mailoutbox)
    assert ("developer@example.com", "[Image Mode Portal] Promotion approved") in subjects
    assert ("developer@example.com", "[Image Mode Portal] Promotion applied") in subjects
    assert ("approver@example.com", "[Image Mode Portal] Promotion applied") in subjects
    decided = next(m for m in mailoutbox if "approved" in m.subject)
    assert "- approver approved" in decided.body
    assert stage_digest(promo.ref("test")) == promo.builds[0].digest


def test_a_rejection_is_mailed_to_the_requester_with_the_comment(promo, eager_tasks, mailoutbox,
                                                                django_capture_on_commit_callbacks):
    ready_for_test(promo)
    promotion = ask_for_test(promo)
    with django_capture_on_commit_callbacks(execute=True):
        promotions.promotion_reject(promotion=promotion, user=promo.personas.approver, digest=promotion.digest,
                                    comment="the smoke test fails on arm64")
    [mail] = mailoutbox
    assert mail.to == ["developer@example.com"] and "Promotion rejected" in mail.subject
    assert "- approver rejected: the smoke test fails on arm64" in mail.body


def test_a_failed_application_is_mailed_to_the_requester_and_the_approvers_with_the_reason(
        promo, eager_tasks, mailoutbox, django_capture_on_commit_callbacks):
    ready_for_test(promo)  # not pushed: the image is not in the definition's repository, so skopeo copy fails
    promotion = ask_for_test(promo)
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):  # the apply task runs in-process, eagerly
        promotions.promotion_approve(promotion=promotion, user=promo.personas.approver, digest=promotion.digest)
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.FAILED and promotion.status_note
    failed = [m for m in mailoutbox if "Promotion failed" in m.subject]
    assert sorted(m.to[0] for m in failed) == ["approver@example.com", "developer@example.com"]
    assert promotion.status_note[:60] in failed[0].body  # the reason
    assert reverse("releases:promotion_detail", args=[promotion.pk]) in failed[0].body


def test_a_failed_build_is_mailed_to_the_team(promo, eager_tasks, mailoutbox, django_capture_on_commit_callbacks):
    build = promo.builds[2]
    build.run.status, build.run.exit_reason = "failed", "podman build failed (podman exited with status 1)"
    build.run.save()
    with django_capture_on_commit_callbacks(execute=True):
        notify_build_failed(build=build)
    recipients = {m.to[0] for m in mailoutbox}
    assert recipients == {"developer@example.com", "approver@example.com", "approver2@example.com",
                          "teamadmin@example.com"}
    assert "Build failed: platform/web-os build 3" in mailoutbox[0].subject
    assert "podman exited with status 1" in mailoutbox[0].body


# --- Webhooks ---------------------------------------------------------------------------------------------------------


def test_a_webhook_delivery_is_signed_and_verifies_with_the_documented_method(promo, receiver, eager_tasks,
                                                                              django_capture_on_commit_callbacks):
    r = receiver()
    hook, secret = notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="chat", url=r.url,
                                                events=[PromotionEvent.APPROVAL_REQUESTED])
    ready_for_test(promo)
    with django_capture_on_commit_callbacks(execute=True):
        promotion = ask_for_test(promo)
    [request] = r.requests
    assert documented_verify(secret, request["headers"], request["body"])
    assert not documented_verify("another secret", request["headers"], request["body"])
    assert not documented_verify(secret, request["headers"], request["body"] + b" ")
    assert notifications.verify_signature(secret, request["headers"]["X-Portal-Timestamp"], request["body"],
                                          request["headers"]["X-Portal-Signature-256"])
    payload = json.loads(request["body"])
    assert payload["type"] == "promotion.requested" == request["headers"]["X-Portal-Event"]
    assert payload["version"] == 1 and payload["delivery"] == request["headers"]["X-Portal-Delivery"]
    assert payload["subject"]["id"] == promotion.pk and payload["data"]["digest"] == promotion.digest
    assert payload["subject"]["url"].endswith(reverse("releases:promotion_detail", args=[promotion.pk]))
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1 and delivery.response_code == 200
    assert request["headers"]["X-Portal-Delivery"] == delivery.delivery_id


def test_an_old_timestamp_does_not_verify():
    body = b'{"event":"ping"}'
    old = str(int(time.time()) - 3600)
    assert not notifications.verify_signature("s", old, body, notifications.sign("s", old, body))


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(promo, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    r = receiver(codes=[500, 503, 502])
    hook, _ = notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="ci", url=r.url,
                                           events=[BuildEvent.BUILD_FAILED])
    [delivery] = notify_build_failed(build=promo.builds[0]).deliveries
    assert notifications.webhook_attempt(delivery_id=delivery.pk) == settings.WEBHOOK_RETRY_BASE_SECONDS
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.RETRYING, 1, 500)
    assert delivery.next_attempt_at is not None
    assert notifications.webhook_attempt(delivery_id=delivery.pk) == settings.WEBHOOK_RETRY_BASE_SECONDS * 4
    assert notifications.webhook_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and "gave up after 3 attempts" in delivery.error
    assert len(r.requests) == 3
    assert notifications.webhook_attempt(delivery_id=delivery.pk) is None and len(r.requests) == 3


def test_a_receiver_that_refuses_with_4xx_is_not_retried(promo, receiver):
    r = receiver(codes=[401])
    notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="ci", url=r.url,
                                 events=[BuildEvent.BUILD_FAILED])
    [delivery] = notify_build_failed(build=promo.builds[0]).deliveries
    assert notifications.webhook_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.response_code == 401


def test_a_reason_phrase_holding_a_nul_is_recorded_with_a_replacement_character(promo, receiver):
    r = receiver(codes=[502], reason="Bad\x00Gateway")
    notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="ci", url=r.url,
                                 events=[BuildEvent.BUILD_FAILED])
    [delivery] = notify_build_failed(build=promo.builds[0]).deliveries
    assert notifications.webhook_attempt(delivery_id=delivery.pk) is not None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_code, delivery.error) == (DeliveryStatus.RETRYING, 502,
                                                                         "HTTP 502 Bad\ufffdGateway")


def test_an_unreachable_receiver_is_recorded_with_the_error(promo, settings):
    port = free_port()
    settings.EGRESS_ALLOW = [f"127.0.0.1:{port}"]
    notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="ci",
                                 url=f"http://127.0.0.1:{port}/hook", events=[BuildEvent.BUILD_FAILED])
    [delivery] = notify_build_failed(build=promo.builds[0]).deliveries
    assert notifications.webhook_attempt(delivery_id=delivery.pk) is not None
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.RETRYING and "refused" in delivery.error.lower()


def test_webhooks_get_only_their_events_and_paused_ones_nothing(promo, receiver):
    r = receiver()
    notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="a", url=r.url,
                                 events=[PromotionEvent.APPLIED])
    paused, _ = notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="b", url=r.url,
                                             events=[BuildEvent.BUILD_FAILED])
    notifications.webhook_update(hook=paused, user=promo.personas.admin, name="b", url=r.url,
                                 events=[BuildEvent.BUILD_FAILED], active=False)
    assert notify_build_failed(build=promo.builds[0]).deliveries == []


def test_the_delivery_log_shows_attempts_and_redelivers(client_for, promo, receiver):
    r = receiver(codes=[500])
    hook, _ = notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="ci", url=r.url,
                                           events=[BuildEvent.BUILD_FAILED])
    [delivery] = notify_build_failed(build=promo.builds[0]).deliveries
    notifications.webhook_attempt(delivery_id=delivery.pk)
    page = client_for(promo.personas.admin).get(hook.get_absolute_url()).content.decode()
    assert "HTTP 500" in page and "Retrying" in page and "next try" in page
    url = reverse("portal:webhook_delivery_redeliver", args=[delivery.pk])
    assert client_for(promo.personas.approver).post(url).status_code == 403
    assert client_for(promo.personas.admin).post(url).status_code == 302
    assert WebhookDelivery.objects.count() == 2
    assert client_for(promo.personas.admin).post(reverse("portal:notification_webhook_test", args=[hook.pk])).status_code == 302
    assert WebhookDelivery.objects.filter(event="ping").exists()


# --- Through a real worker -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_worker_applies_the_promotion_and_retries_a_webhook_with_backoff(
        start_worker, client_for, promo, receiver):
    """Approve in the browser's place (HTTP), then a real Celery worker applies the promotion with skopeo and delivers the
    webhook, retrying after a 503 with the configured backoff."""
    promo.push()
    ready_for_test(promo)
    r = receiver(codes=[503])
    hook, secret = notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="ci", url=r.url,
                                                events=[PromotionEvent.APPLIED])
    promotion = ask_for_test(promo)
    start_worker(queues="default", concurrency=2, WEBHOOK_RETRY_BASE_SECONDS="0.5")
    response = client_for(promo.personas.approver).post(reverse("releases:promotion_approve", args=[promotion.pk]),
                                                        {"digest": promotion.digest, "comment": "go"})
    assert response.status_code == 302
    wait_for(lambda: Promotion.objects.get(pk=promotion.pk).status not in ("pending", "applying"), timeout=60,
             what="the worker to apply the promotion")
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.APPLIED, promotion.status_note
    assert stage_digest(promo.ref("test")) == promo.builds[0].digest
    wait_for(lambda: WebhookDelivery.objects.filter(webhook=hook, status="delivered").exists(), timeout=30,
             what="the webhook to be delivered after a retry")
    delivery = WebhookDelivery.objects.get(webhook=hook)
    assert delivery.attempts == 2 and len(r.requests) == 2
    assert r.requests[1]["at"] - r.requests[0]["at"] >= 0.4  # waited for the backoff
    assert all(documented_verify(secret, q["headers"], q["body"]) for q in r.requests)


def test_the_documented_example_signature():
    """docs/promotions.md quotes this value."""
    body = b'{"event":"ping"}'
    assert notifications.sign("s3cret", "1700000000", body) == \
        "sha256=6846770b4cb3a67aa55cb7edb85678c8c36b8caf1022a60693ee1a47db73c48d"


def test_overdue_deliveries_are_sent_again_by_the_sweeper(promo, receiver, eager_tasks):
    """A retry held by a worker that was restarted would otherwise wait for the broker's visibility timeout."""
    from datetime import timedelta

    from django.utils import timezone

    r = receiver()
    notifications.webhook_create(team=promo.team, user=promo.personas.admin, name="ci", url=r.url,
                                 events=[BuildEvent.BUILD_FAILED])
    lost, fresh = notify_build_failed(build=promo.builds[0]).deliveries + \
        notify_build_failed(build=promo.builds[1]).deliveries
    WebhookDelivery.objects.filter(pk=lost.pk).update(status=DeliveryStatus.RETRYING, attempts=1,
                                                      next_attempt_at=timezone.now() - timedelta(minutes=10))
    assert notifications.webhook_deliveries_due() == [lost.pk]  # the fresh one is not overdue yet
    lost.refresh_from_db()
    assert lost.status == DeliveryStatus.DELIVERED and lost.attempts == 2 and len(r.requests) == 1
    later = timezone.now() + timedelta(minutes=5)
    assert notifications.webhook_deliveries_due(now=later) == [fresh.pk]  # never enqueued: picked up too
    assert notifications.webhook_deliveries_due(now=later) == []
