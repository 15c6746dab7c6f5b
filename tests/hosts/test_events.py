"""Events (portal.events, docs/events.md): every state change users care about, emitted by the feature that made it, in
one versioned envelope that each type's JSON Schema checks, stored for the API's list and sent to the webhooks that
subscribed to it. The events here are real: real podman builds, promotions applied with skopeo, a simulated fleet over
SSH, a retention pass. They sit with hosts, the top layer, because they cross every app."""

import json
from pathlib import Path

import jsonschema
import pytest
from django.urls import reverse

from builds import pipeline
from builds import services as build_services
from builds.releases import services as promotions
from builds.releases.models import PromotionStatus, StageHistory
from hosts import drift, poller
from hosts.simbootc import Deployment
from portal import events, registry
from portal.models import Event, NotificationWebhook, WebhookDelivery
from portal.retention import retention_run
from tests.builds.fixtures import BASE_IMAGE
from tests.hosts.fixtures import booted_state

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
REF = "127.0.0.1:1/platform/web-os:prod"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
EVERY_TYPE = {"build.started", "build.succeeded", "build.failed", "promotion.requested", "promotion.approved",
              "promotion.rejected", "promotion.applied", "promotion.failed", "host.drift", "host.rollback",
              "host.unreachable", "retention.run", "vulnerabilities.found", "vulnerabilities.running"}


def conforms(event: Event) -> dict:
    """The stored envelope, checked against its type's schema (with formats: uuid, date-time, uri)."""
    schema = events.schema_for(event.type)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(event.envelope)
    assert event.envelope["id"] == str(event.uuid) and event.envelope["version"] == event.version == 1
    return event.envelope


def emitted(*types):
    return list(Event.objects.filter(type__in=types).order_by("sequence"))


# --- The catalogue ---------------------------------------------------------------------------------------------------


def test_every_kind_of_event_users_care_about_is_registered_with_a_valid_schema_and_documented():
    registered = {spec.kind for spec in registry.event_types()}
    assert EVERY_TYPE <= registered
    text = DOCS.read_text()
    for kind in registered:
        schema = events.schema_for(kind)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["data"].get("additionalProperties") is False, kind  # nothing undocumented
        assert f"### `{kind}`" in text, f"docs/events.md has no section for {kind}"


def test_an_event_of_no_registered_kind_is_refused(personas):
    with pytest.raises(ValueError, match="no registered kind"):
        events.emit(type="build.exploded", team=personas.team, data={},
                    subject=events.Subject(kind="build", id=1, name="x", path="/"))
    assert not Event.objects.exists()


# --- Builds ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def definition(personas, oci_registry, local_builder, build_settings):
    return build_services.definition_create(team=personas.team, user=personas.developer, name="web-os",
                                            description="The web tier's OS")


def build_now(definition, user, containerfile):
    revision = build_services.revision_create(definition=definition, user=user, containerfile=containerfile)
    build = build_services.build_start(revision=revision, user=user)
    pipeline.build_execute(build.pk)
    return build


@pytest.mark.slow
def test_a_build_emits_started_then_succeeded_with_its_digest(definition, personas):
    build = build_now(definition, personas.developer, f"FROM {BASE_IMAGE}\nRUN echo ok > /ok\n")
    started, succeeded = emitted("build.started", "build.succeeded")
    assert (started.type, succeeded.type) == ("build.started", "build.succeeded")
    first, last = conforms(started), conforms(succeeded)
    assert first["actor"] == "developer" and first["data"]["status"] == "running"
    assert last["subject"]["id"] == build.pk and last["subject"]["url"].endswith(build.get_absolute_url())
    build.refresh_from_db()
    assert last["data"]["digest"] == build.digest and last["team"] == {"slug": "platform", "name": "Platform"}


@pytest.mark.slow
def test_a_failed_build_emits_build_failed_with_the_reason(definition, personas):
    build_now(definition, personas.developer, f"FROM {BASE_IMAGE}\nRUN exit 3\n")
    [failed] = emitted("build.failed")
    envelope = conforms(failed)
    assert envelope["data"]["status"] == "failed" and "podman build failed" in envelope["data"]["reason"]
    assert envelope["data"]["digest"] is None


# --- Promotions ------------------------------------------------------------------------------------------------------


def ready_for_test(promo, build):
    StageHistory.objects.create(stage=promo.stages["dev"], definition=promo.definition, digest=build.digest,
                                build=build)
    return promotions.promotion_request(definition=promo.definition, build=build, target_stage=promo.stages["test"],
                                        user=promo.personas.developer, reason="ready")


def test_a_promotion_emits_requested_approved_and_applied(promo, eager_tasks, django_capture_on_commit_callbacks):
    promo.push()
    promotion = ready_for_test(promo, promo.builds[0])
    with django_capture_on_commit_callbacks(execute=True):
        promotions.promotion_approve(promotion=promotion, user=promo.personas.approver, digest=promotion.digest)
    promotion.refresh_from_db()
    assert promotion.status == PromotionStatus.APPLIED
    kinds = [e.type for e in emitted("promotion.requested", "promotion.approved", "promotion.applied")]
    assert kinds == ["promotion.requested", "promotion.approved", "promotion.applied"]
    requested, approved, applied = (conforms(e) for e in emitted(*kinds))
    assert requested["actor"] == "developer" and approved["actor"] == "approver" and applied["actor"] is None
    assert approved["data"]["decisions"][0]["by"] == "approver"
    assert applied["data"]["digest"] == promo.builds[0].digest and applied["data"]["stage"] == "test"
    assert applied["subject"] == {**applied["subject"], "kind": "promotion", "id": promotion.pk}


def test_a_rejected_and_a_failed_promotion_are_events_too(promo, eager_tasks, django_capture_on_commit_callbacks):
    rejected = ready_for_test(promo, promo.builds[0])
    promotions.promotion_reject(promotion=rejected, user=promo.personas.approver, digest=rejected.digest,
                                comment="smoke test fails")
    failing = ready_for_test(promo, promo.builds[1])  # not pushed: skopeo copy fails
    with django_capture_on_commit_callbacks(execute=True):
        promotions.promotion_approve(promotion=failing, user=promo.personas.approver, digest=failing.digest)
    [rejection] = emitted("promotion.rejected")
    assert conforms(rejection)["data"]["decisions"][0]["comment"] == "smoke test fails"
    [failure] = emitted("promotion.failed")
    envelope = conforms(failure)
    assert envelope["subject"]["id"] == failing.pk and envelope["data"]["status_note"]


# --- Hosts -----------------------------------------------------------------------------------------------------------


def test_a_host_that_starts_drifting_emits_host_drift_once(fleet):
    fleet.add("web-01", booted_state(REF, D1))
    hosts = fleet.start()
    poller.poll_hosts([hosts["web-01"].pk])
    drift.reference_digests_set(reference=REF, digests={"amd64": D1})
    assert not emitted("host.drift")
    drift.reference_digests_set(reference=REF, digests={"amd64": D2}, source="promotion")
    poller.poll_hosts([hosts["web-01"].pk])  # still drifting: no second event
    [event] = emitted("host.drift")
    envelope = conforms(event)
    assert envelope["subject"]["name"] == "web-01" and envelope["subject"]["kind"] == "host"
    assert (envelope["data"]["booted_digest"], envelope["data"]["expected_digest"]) == (D1, D2)


def test_an_automatic_rollback_emits_host_rollback(fleet):
    def staged_to_fail(state):
        booted_state(REF, D1, "1.0")(state)
        state.staged = Deployment(image=REF, digest=D2, version="2.0", will_fail_health_check=True)

    fleet.add("web-01", staged_to_fail)
    hosts = fleet.start()
    poller.poll_hosts([hosts["web-01"].pk])
    fleet.fleet.call(fleet.sim("web-01")._reboot)
    poller.poll_hosts([hosts["web-01"].pk])
    [event] = emitted("host.rollback")
    rollback = conforms(event)["data"]["rollback"]
    assert rollback["automatic"] and (rollback["digest"], rollback["previous_digest"]) == (D1, D2)


def test_a_host_that_stops_answering_emits_host_unreachable_once(fleet):
    fleet.add("web-01", booted_state(REF, D1))
    hosts = fleet.start()
    poller.poll_hosts([hosts["web-01"].pk])
    fleet.fleet.set_fault("web-01", "down", True)
    for _ in range(2):
        poller.poll_hosts([hosts["web-01"].pk])
    [event] = emitted("host.unreachable")
    data = conforms(event)["data"]
    assert data["state"] == "unreachable" and data["unreachable"]["failures"] == 1


# --- Retention -------------------------------------------------------------------------------------------------------


def test_a_retention_pass_emits_retention_run_with_what_each_step_removed(personas):
    record = retention_run(trigger="command")
    [event] = emitted("retention.run")
    envelope = conforms(event)
    assert envelope["team"] is None and envelope["subject"]["id"] == record.pk
    assert set(envelope["data"]["removed"]) >= {"logs", "webhook_deliveries", "events", "login_records"}


def test_stored_events_older_than_the_setting_are_removed_by_the_retention_pass(personas, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.EVENT_KEEP_DAYS = 30
    old = emit_one(personas.team)
    Event.objects.filter(pk=old.pk).update(time=timezone.now() - timedelta(days=31))
    recent = emit_one(personas.team)
    record = retention_run(trigger="command")
    assert record.removed["events"]["count"] == 1
    assert list(Event.objects.exclude(type="retention.run").values_list("pk", flat=True)) == [recent.pk]


# --- Webhooks subscribe to any subset --------------------------------------------------------------------------------


def emit_one(team, kind="build.failed"):
    return events.emit(type=kind, team=team, data={}, subject=events.Subject(kind="build", id=1, name="b", path="/"))


def test_a_webhook_made_with_the_form_gets_only_the_kinds_it_ticked(personas, client_for, django_capture_on_commit_callbacks,
                                                                    egress_allow):
    egress_allow("127.0.0.1:9")
    response = client_for(personas.admin).post(
        reverse("portal:notification_webhooks", args=[personas.team.slug]),
        {"name": "ops", "url": "http://127.0.0.1:9/hook", "events": ["host.unreachable", "promotion.applied"],
         "active": "on"})
    assert response.status_code in (200, 302), response.content[:500]
    hook = NotificationWebhook.objects.get(team=personas.team, name="ops")
    assert sorted(hook.events) == ["host.unreachable", "promotion.applied"]
    emit_one(personas.team, "build.failed")
    emit_one(personas.team, "host.unreachable")
    emit_one(personas.other_team, "host.unreachable")  # another team's: not this hook's
    assert list(WebhookDelivery.objects.values_list("event", flat=True)) == ["host.unreachable"]
    body = WebhookDelivery.objects.get().payload
    assert body["type"] == "host.unreachable" and body["team"]["slug"] == "platform" and body["delivery"]


def test_the_webhook_form_offers_every_kind_of_event(personas, client_for):
    page = client_for(personas.admin).get(reverse("portal:notification_webhooks", args=[personas.team.slug]))
    text = page.content.decode()
    for kind in EVERY_TYPE:
        assert f'value="{kind}"' in text, kind


# --- Reading them back (what the API's event list serves) ------------------------------------------------------------


class TestEventList:
    def test_anonymous_users_see_no_events(self, personas):
        from django.contrib.auth.models import AnonymousUser

        emit_one(personas.team)
        assert events.event_list(user=AnonymousUser()).items == []

    def test_an_outsider_sees_only_their_own_teams_events(self, personas):
        emit_one(personas.team)
        theirs = emit_one(personas.other_team)
        assert [e["id"] for e in events.event_list(user=personas.outsider).items] == [str(theirs.uuid)]
        from django.http import Http404

        with pytest.raises(Http404):
            events.event_list(user=personas.outsider, team=personas.team.slug)

    def test_a_read_only_member_reads_the_teams_events_after_a_cursor(self, personas):
        first, second, third = (emit_one(personas.team, kind) for kind in
                                ("build.started", "build.failed", "host.unreachable"))
        page = events.event_list(user=personas.viewer, after=str(first.uuid))
        assert [e["id"] for e in page.items] == [str(second.uuid), str(third.uuid)] and page.last == str(third.uuid)
        assert events.event_list(user=personas.viewer, after=page.last).items == []
        assert events.event_list(user=personas.viewer, after=page.last).last == page.last
        only = events.event_list(user=personas.viewer, types=["host.unreachable"], team="platform")
        assert [e["type"] for e in only.items] == ["host.unreachable"]

    def test_the_latest_come_first_page_oldest_first(self, personas):
        made = [emit_one(personas.team) for _ in range(5)]
        page = events.event_list(user=personas.developer, limit=2)
        assert [e["id"] for e in page.items] == [str(made[3].uuid), str(made[4].uuid)]

    def test_bad_arguments_are_named(self, personas):
        theirs = emit_one(personas.other_team)
        with pytest.raises(ValueError, match="^after:"):
            events.event_list(user=personas.viewer, after=str(theirs.uuid))  # not theirs to see: unknown
        with pytest.raises(ValueError, match="^after:"):
            events.event_list(user=personas.viewer, after="not-a-uuid")
        with pytest.raises(ValueError, match="^type: build.exploded"):
            events.event_list(user=personas.viewer, types=["build.exploded"])

    def test_the_stored_envelope_is_what_a_receiver_parses(self, personas):
        event = emit_one(personas.team)
        assert json.loads(json.dumps(event.envelope)) == Event.objects.get(pk=event.pk).envelope
