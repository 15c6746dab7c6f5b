"""Hosts that report in and stop: offline after missed reports (counting reports not yet written), back with their
next report, and a flapping host that makes one event with a count, not hundreds. Real PostgreSQL and Redis."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts import agentcache, reportin
from hosts.models import EventKind, Host, HostSnapshot, HostState
from portal.models import Event
from tests.hosts.reportin_fixtures import Agent, make_token, status_json


@pytest.fixture
def reporting(db, personas, settings):
    """An approved host that has reported once; reports are expected every minute, offline after 3 missed."""
    settings.HOSTS_AGENT_REPORT_SECONDS, settings.HOSTS_AGENT_OFFLINE_AFTER_MISSED = 60, 3
    settings.HOSTS_FLAP_WINDOW_SECONDS = 3600
    agentcache._client().delete(agentcache.SEEN_KEY, agentcache.FLUSH_LOCK_KEY)
    _, secret = make_token(personas, pre_approved=True)
    agent = Agent()
    agent.enroll(secret)
    agent.report(status_json())
    return Host.objects.get(name="edge-01"), agent


def last_report(host, ago):
    Host.objects.filter(pk=host.pk).update(status_at=timezone.now() - ago)


def reachability_events(host):
    return list(host.events.filter(kind__in=[EventKind.UNREACHABLE, EventKind.REACHABLE]).order_by("at", "id"))


class TestOffline:
    def test_a_host_goes_offline_after_three_missed_reports(self, reporting):
        host, _ = reporting
        last_report(host, timedelta(minutes=3, seconds=5))
        assert reportin.agents_offline_sweep() == 1
        host.refresh_from_db()
        assert host.state == HostState.UNREACHABLE and not host.reachable and "No report since" in host.last_error
        [event] = reachability_events(host)
        assert event.kind == EventKind.UNREACHABLE and event.summary.startswith("Offline")
        assert reportin.agents_offline_sweep() == 0 and len(reachability_events(host)) == 1
        [sent] = Event.objects.filter(type="host.unreachable", subject_id=str(host.pk))
        data = sent.envelope["data"]
        assert data["unreachable"]["error_kind"] == "offline" and data["state"] == HostState.UNREACHABLE

    def test_a_host_that_missed_fewer_reports_stays_online(self, reporting):
        host, _ = reporting
        last_report(host, timedelta(minutes=2, seconds=50))
        assert reportin.agents_offline_sweep() == 0
        host.refresh_from_db()
        assert host.state == HostState.RUNNING

    def test_a_report_not_yet_written_counts(self, reporting):
        host, agent = reporting
        last_report(host, timedelta(minutes=10))
        agentcache._client().set(agentcache.FLUSH_LOCK_KEY, "1", ex=600)
        assert agent.report(status_json()).json()["status"] == "unchanged"  # marked in Redis only
        assert reportin.agents_offline_sweep() == 0

    def test_its_next_report_brings_it_back(self, reporting):
        host, agent = reporting
        last_report(host, timedelta(minutes=5))
        reportin.agents_offline_sweep()
        answer = agent.report(status_json())
        assert answer.json()["status"] == "changed" and answer.json()["state"] == HostState.RUNNING
        host.refresh_from_db()
        assert host.reachable and host.failures == 0
        offline, back = reachability_events(host)
        assert back.kind == EventKind.REACHABLE and back.summary.startswith("Reporting again, after 5 minutes")
        assert HostSnapshot.objects.filter(host=host).count() == 1  # same status: no new snapshot

    def test_hosts_never_heard_from_or_waiting_for_approval_are_not_offline(self, reporting, personas):
        _, secret = make_token(personas, uses=2)
        pending = Agent()
        pending.enroll(secret, name="edge-02")
        Host.objects.filter(name="edge-02").update(status_at=timezone.now() - timedelta(hours=1))
        _, pre = make_token(personas, pre_approved=True)
        Agent().enroll(pre, name="edge-03")  # approved, never reported: "not read yet"
        assert reportin.agents_offline_sweep() == 0

    def test_a_flapping_host_makes_one_event_with_a_count(self, reporting):
        host, agent = reporting
        for _ in range(50):
            last_report(host, timedelta(minutes=4))
            assert reportin.agents_offline_sweep() == 1
            assert agent.report(status_json()).json()["status"] == "changed"
        events = reachability_events(host)
        # The first outage as it happened; every change after it folded into the coming back, with the count.
        assert [e.kind for e in events] == [EventKind.UNREACHABLE, EventKind.REACHABLE]
        assert events[-1].detail["flaps"] == 100 and "flapping: 100 changes" in events[-1].summary
        assert host.events.count() < 10
        assert Event.objects.filter(type="host.unreachable", subject_id=str(host.pk)).count() == 1

    def test_changes_far_apart_are_events_of_their_own(self, reporting):
        host, agent = reporting
        last_report(host, timedelta(minutes=4))
        reportin.agents_offline_sweep()
        agent.report(status_json())
        back = reachability_events(host)[-1]
        host.events.filter(pk=back.pk).update(at=timezone.now() - timedelta(hours=2))
        last_report(host, timedelta(minutes=4))
        reportin.agents_offline_sweep()
        events = sorted(reachability_events(host), key=lambda event: event.pk)
        assert [e.kind for e in events] == [EventKind.UNREACHABLE, EventKind.REACHABLE, EventKind.UNREACHABLE]
        assert "flaps" not in events[-1].detail and events[1].summary == back.summary
