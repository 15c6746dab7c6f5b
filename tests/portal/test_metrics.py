"""/metrics: django-prometheus's request and database metrics plus the portal's own, read at scrape time from the
database and Redis (so what workers do shows whichever process is scraped), for a bearer of METRICS_TOKEN or a client
in METRICS_ALLOWED_NETWORKS only. The Grafana dashboard in deploy/grafana/ asks only for metrics that exist here;
tests/hosts/test_prometheus.py has a real Prometheus scrape a working portal and answer every one of its queries."""

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from portal import registry, services
from portal.celery import app
from portal.logsink import LogSink
from portal.models import Run, RunKind, RunStatus
from tests.helpers import ROOT
from tests.plugins.personas import make_team

pytestmark = pytest.mark.django_db

DASHBOARD = ROOT / "deploy" / "grafana" / "portal-dashboard.json"


def scrape(client, **headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


def samples(text):
    """{(sample name, frozenset of labels): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


def finished_run(team, kind, *, status, seconds):
    run = services.run_create(kind=kind, title="t", team=team)
    services.run_start(run)
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(seconds=seconds))
    services.run_finish(run, status=status)
    return run


# --- Who may read it -------------------------------------------------------------------------------------------------


def test_with_neither_a_token_nor_networks_metrics_are_off_and_the_refusal_names_both_settings(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    response = client.get("/metrics")
    assert response.status_code == 403
    text = response.content.decode()
    assert text.startswith("Metrics are off") and "METRICS_TOKEN" in text and "METRICS_ALLOWED_NETWORKS" in text


def test_a_scraper_with_the_token_reads_them_and_a_wrong_token_does_not(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "s3cret-metrics", []
    assert "portal_runs_started_total" in scrape(client, Authorization="Bearer s3cret-metrics")
    for presented in ("Bearer wrong", "s3cret-metrics", "Bearer s3cret-metrics-and-more", "Bearer ²é✓", ""):
        response = client.get("/metrics", headers={"Authorization": presented} if presented else {})
        assert response.status_code == 403, presented
        assert "Authorization: Bearer <METRICS_TOKEN>" in response.content.decode()


def test_a_client_in_the_allowed_networks_reads_them_and_another_address_is_told_its_own(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", ["10.20.0.0/16"]
    allowed = client.get("/metrics", REMOTE_ADDR="10.20.3.4")
    assert allowed.status_code == 200
    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 403
    assert "METRICS_ALLOWED_NETWORKS" in refused.content.decode() and "203.0.113.9" in refused.content.decode()


def test_behind_a_trusted_proxy_the_forwarded_client_counts_not_the_proxy(client, settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", ["127.0.0.1/32"]
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 403 and "198.51.100.7" in response.content.decode()


def test_a_scrape_by_internal_address_over_plain_http_is_answered_not_redirected(client, settings):
    settings.METRICS_TOKEN = "s3cret-metrics"
    settings.SECURE_SSL_REDIRECT, settings.ALLOWED_HOSTS = True, ["portal.example.com"]
    response = client.get("/metrics", HTTP_HOST="10.89.0.7:8000", headers={"Authorization": "Bearer s3cret-metrics"})
    assert response.status_code == 200
    assert client.get("/", HTTP_HOST="10.89.0.7:8000").status_code == 400  # pages still check the host


# --- What it tells ---------------------------------------------------------------------------------------------------


def test_runs_are_counted_per_kind_and_status_with_their_durations_and_log_lines(client):
    team = make_team("Metrics")
    finished_run(team, RunKind.BUILD, status=RunStatus.SUCCEEDED, seconds=3)
    finished_run(team, RunKind.BUILD, status=RunStatus.FAILED, seconds=400)
    finished_run(team, RunKind.HOST_ACTION, status=RunStatus.SUCCEEDED, seconds=0.5)
    services.run_create(kind=RunKind.DISK_IMAGE, title="waiting", team=team)
    running = services.run_create(kind=RunKind.PROMOTION_APPLY, title="copying", team=team)
    services.run_start(running)
    sink = LogSink(running)
    for n in range(7):
        sink.write(f"line {n}")
    sink.close()

    found = samples(scrape(client))
    assert value(found, "portal_runs_started_total", kind="build") == 2
    assert value(found, "portal_runs_finished_total", kind="build", status="failed") == 1
    assert value(found, "portal_runs_finished_total", kind="build", status="succeeded") == 1
    assert value(found, "portal_runs_finished_total", kind="disk_image", status="cancelled") == 0
    assert value(found, "portal_runs_active", kind="disk_image", status="queued") == 1
    assert value(found, "portal_runs_active", kind="promotion_apply", status="running") == 1
    assert value(found, "portal_log_lines_written_total", kind="promotion_apply") == 7
    assert value(found, "portal_run_duration_seconds_bucket", kind="build", le="5.0") == 1
    assert value(found, "portal_run_duration_seconds_bucket", kind="build", le="300.0") == 1
    assert value(found, "portal_run_duration_seconds_bucket", kind="build", le="600.0") == 2
    assert value(found, "portal_run_duration_seconds_bucket", kind="build", le="+Inf") == 2
    assert value(found, "portal_run_duration_seconds_count", kind="host_action") == 1
    assert value(found, "portal_run_duration_seconds_bucket", kind="host_action", le="1.0") == 1
    assert 402 < value(found, "portal_run_duration_seconds_sum", kind="build") < 404
    # Every kind is there from the start, so a dashboard shows 0 rather than nothing.
    for kind in RunKind.values:
        assert value(found, "portal_runs_started_total", kind=kind) >= 0


def test_runs_older_than_a_day_are_tallied_once_per_process_and_never_twice(client, monkeypatch):
    from portal import metrics

    monkeypatch.setattr(metrics, "settled_runs", metrics.SettledRuns())
    team = make_team("Metrics")
    old = finished_run(team, RunKind.BUILD, status=RunStatus.FAILED, seconds=20)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    for _ in range(3):  # the first scrape tallies it into the process's settled runs, the later ones reuse that
        found = samples(scrape(client))
        assert value(found, "portal_runs_finished_total", kind="build", status="failed") == 1
        assert value(found, "portal_run_duration_seconds_bucket", kind="build", le="30.0") == 1
    assert metrics.settled_runs.tallies[("build", "failed")].n == 1
    finished_run(team, RunKind.BUILD, status=RunStatus.FAILED, seconds=20)  # today's: read at each scrape
    assert value(samples(scrape(client)), "portal_runs_finished_total", kind="build", status="failed") == 2


def test_queue_depth_counts_the_tasks_waiting_in_each_queue(client):
    before = value(samples(scrape(client)), "portal_queue_depth", queue="default")
    for _ in range(3):
        app.send_task("portal.tasks.reap_stale_runs", queue="default")
    found = samples(scrape(client))
    assert value(found, "portal_queue_depth", queue="default") == before + 3
    assert ("portal_queue_depth", frozenset({"queue": "hosts"}.items())) in found
    app.control.purge()


def test_the_features_gauges_come_through_the_core_registry(client, personas):
    from builds.models import Builder

    Builder.objects.create(name="metrics-builder", kind="local", architecture="amd64", capacity=3)
    found = samples(scrape(client))
    assert value(found, "portal_builder_capacity", builder="metrics-builder", architecture="amd64") == 3
    assert value(found, "portal_builder_running", builder="metrics-builder", work="build") == 0
    assert value(found, "portal_builder_running", builder="metrics-builder", work="disk_image") == 0
    assert ("portal_queue_depth", frozenset({"queue": "builds.amd64"}.items())) in found
    assert value(found, "portal_promotions_waiting", team=personas.team.slug) == 0
    assert value(found, "portal_hosts", state="new") == 0
    assert value(found, "portal_hosts_oldest_status_age_seconds") == 0
    assert value(found, "portal_metrics_read_errors", source="features") == 0


def test_a_source_that_fails_is_left_out_and_flagged_and_the_rest_still_arrives(client, monkeypatch):
    def broken():
        raise RuntimeError("the table is gone")

    monkeypatch.setattr(registry, "_gauges", [registry.Gauge(
        name="portal_broken", documentation="broken", labels=(), read=broken), *registry.gauges()])
    found = samples(scrape(client))
    assert value(found, "portal_metrics_read_errors", source="features") == 1
    assert value(found, "portal_metrics_read_errors", source="runs") == 0
    assert ("portal_runs_started_total", frozenset({"kind": "build"}.items())) in found
    assert ("portal_hosts_drifting", frozenset()) in found  # the other features' gauges still arrive


def test_requests_and_database_queries_are_counted_by_django_prometheus(client):
    client.get("/login/")
    found = samples(scrape(client))
    names = {name for name, _ in found}
    assert {"django_http_requests_total_by_method_total", "django_http_responses_total_by_status_total",
            "django_db_execute_total", "django_db_query_duration_seconds_bucket"} <= names


# --- The dashboard ---------------------------------------------------------------------------------------------------


def dashboard_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_metric_the_dashboard_asks_for_is_exported(client):
    client.get("/login/")
    text = scrape(client)
    # A family without samples yet (no builder on this portal) is still declared, with its HELP and TYPE.
    exported = {name for name, _ in samples(text)} | {family.name for family in text_string_to_metric_families(text)}
    asked = {name for expr in dashboard_queries() for name in re.findall(r"\b(?:portal|django)_[a-z_]+\b", expr)}
    assert asked and asked <= exported, sorted(asked - exported)
    # Each of the portal's families is on the dashboard.
    portal_families = {re.sub(r"_(total|bucket|sum|count|created)$", "", name) for name in exported
                       if name.startswith("portal_")}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in asked}
    assert portal_families <= shown, sorted(portal_families - shown)
