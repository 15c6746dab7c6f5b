"""A real Prometheus (Debian's package) scrapes a real portal on loopback while a real worker builds an image, and every
query of the shipped Grafana dashboard (deploy/grafana/portal-dashboard.json) returns series from what it scraped.
Grafana itself is not packaged here, so the dashboard is checked by its queries. It sits with hosts, the top layer,
because the dashboard reads every app's metrics."""

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from builds import services as builds
from builds.models import Build
from builds.queues import local_queues
from hosts import services as hosts
from tests.builds.fixtures import BASE_IMAGE, WORKER_ENV
from tests.helpers import free_port, require_tool, wait_for
from tests.portal.test_metrics import dashboard_queries

pytestmark = pytest.mark.slow


class Prometheus:
    def __init__(self, directory, target):
        require_tool("prometheus")
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "portal", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = open(directory / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.ready, timeout=30, what="Prometheus to be ready")

    def get(self, path, **params):
        url = f"http://127.0.0.1:{self.port}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own loopback Prometheus
            return json.loads(response.read())

    def ready(self):
        assert self.process.poll() is None, (self.log.name, open(self.log.name).read())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):  # noqa: S310
                return True
        except OSError:
            return False

    def query(self, expr):
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def target_health(self):
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]  # none until discovery has run
        return (targets[0]["health"], targets[0]["lastError"]) if targets else ("not discovered yet", "")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


@pytest.fixture
def prometheus(tmp_path):
    started = []

    def start(target):
        started.append(Prometheus(tmp_path, target))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_prometheus_scrapes_a_working_portal_and_every_dashboard_query_returns_series(
    portal_server, start_worker, prometheus, personas, oci_registry, local_builder, build_settings
):
    scraper = prometheus(portal_server.url.removeprefix("http://"))
    # The worker starts (some 3 s) while Prometheus discovers its target and scrapes it the first time.
    start_worker(queues=local_queues()[0], concurrency=1, **WORKER_ENV)
    wait_for(lambda: scraper.target_health()[0] == "up", timeout=30, what="the first good scrape")
    hosts.host_create(team=personas.team, name="metrics-host", address="127.0.0.1", actor=personas.admin)

    definition = builds.definition_create(team=personas.team, user=personas.developer, name="metrics-os")
    revision = builds.revision_create(definition=definition, user=personas.developer,
                                      containerfile=f"FROM {BASE_IMAGE}\nRUN echo hello > /etc/hello\n")
    build = builds.build_start(revision=revision, user=personas.developer)
    for path in ("/login/", "/health/ready", "/no-such-page/"):  # pages, so web's request metrics have series
        try:
            urllib.request.urlopen(portal_server.url + path, timeout=10).close()  # noqa: S310 - loopback test server
        except urllib.error.HTTPError:
            pass
    wait_for(lambda: Build.objects.get(pk=build.pk).run.is_finished, timeout=120, what="the build to end")
    assert Build.objects.get(pk=build.pk).run.status == "succeeded", Build.objects.get(pk=build.pk).run.exit_reason

    # What the worker did shows in the web process's scrape.
    wait_for(lambda: scraper.query('portal_runs_finished_total{kind="build",status="succeeded"} == 1'), timeout=30,
             what="the finished build in Prometheus")
    assert scraper.query('portal_runs_started_total{kind="build"}')[0]["value"][1] == "1"
    assert float(scraper.query('portal_log_lines_written_total{kind="build"}')[0]["value"][1]) > 0
    assert scraper.query('portal_builder_capacity{builder="local"}')[0]["value"][1] == "2"
    assert scraper.query('portal_hosts{state="new"}')[0]["value"][1] == "1"
    assert scraper.target_health() == ("up", "")

    # A rate needs two scrapes of a series: give the last ones to appear a few more (20 s), asking 4 times a scrape.
    empty = dashboard_queries()
    deadline = time.monotonic() + 20
    while True:
        empty = [expr for expr in empty if not scraper.query(expr)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert empty == [], f"dashboard queries without series: {empty}"
