"""Advisory feeds read from a URL, against a real HTTP server on loopback: OSV and CSAF documents imported, an unchanged
feed not imported again, a feed that is not OSV or CSAF and a 500 MB feed refused with a clear reason and nothing
half-imported, the egress policy asked first, and beat's pass reading only the feeds that are due."""

import hashlib
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from builds.supplychain import feeds, services
from builds.supplychain.models import Advisory, AdvisoryFeed
from builds.supplychain.tasks import advisory_feeds_refresh_due
from portal.models import AuditEvent
from tests.helpers import allow_egress
from tests.supplychain.osv import FEED, JQ_ADVISORY, csaf_vex, feed_bytes

HUGE = 500 * 1024 * 1024


class FeedServer:
    """A loopback HTTP server whose paths answer what the test sets: bytes, or a huge body (announced with its
    Content-Length, or streamed without one) of which only what the client reads is ever written."""

    def __init__(self):
        self.bodies, self.requests = {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                outer.requests.append(self.path)
                body = outer.bodies.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if isinstance(body, tuple) and body[0] == "drip":  # a byte every 0.1 s, for at most 30 s
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    try:
                        for _ in range(300):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass  # the portal hung up: what it should do
                    return
                if isinstance(body, tuple):  # ("huge", announced)
                    self.send_response(200)
                    if body[1]:
                        self.send_header("Content-Length", str(HUGE))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    block = b"[" + b" " * (1 << 20)
                    try:
                        for _ in range(HUGE // len(block)):
                            self.wfile.write(block)
                    except OSError:
                        pass  # the portal stopped reading: what it should do
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server():
    server = FeedServer()
    server.thread.start()
    undo = allow_egress(f"127.0.0.1:{server.port}")
    yield server
    undo()
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def feed(server, personas):
    server.bodies["/osv/all.json"] = feed_bytes()
    return feeds.feed_source_set(name="debian", url=server.url("/osv/all.json"), refresh_hours=6,
                                 user=personas.superuser)


def identifiers(feed):
    return set(Advisory.objects.filter(feed__name=feed.name).values_list("identifier", flat=True))


@pytest.mark.django_db
def test_an_osv_feed_is_read_from_its_url_and_an_unchanged_one_is_not_imported_again(server, feed):
    assert feeds.feed_refresh(feed=feed) == "Imported 5 advisories into debian."
    feed.refresh_from_db()
    assert identifiers(feed) == {r["id"] for r in FEED} and feed.source == server.url("/osv/all.json")
    assert feed.content_sha256 == hashlib.sha256(feed_bytes()).hexdigest() and feed.checked_at and not feed.last_error
    assert feeds.feed_refresh(feed=feed) == "debian is unchanged."
    assert AuditEvent.objects.filter(action="advisories.import").count() == 1
    server.bodies["/osv/all.json"] = feed_bytes([*FEED, JQ_ADVISORY])  # the mirror was updated
    assert feeds.feed_refresh(feed=feed) == "Imported 6 advisories into debian."
    assert "DSA-9006-1" in identifiers(feed)


@pytest.mark.django_db
def test_a_csaf_document_is_read_from_its_url(server, personas):
    document = csaf_vex("CVE-2026-2001", fixed_purls=["pkg:rpm/redhat/openssl@3.0.7-28.el9?arch=x86_64&epoch=1"])
    server.bodies["/csaf/cve-2026-2001.json"] = json.dumps(document).encode()
    feed = feeds.feed_source_set(name="rhel-9", url=server.url("/csaf/cve-2026-2001.json"), refresh_hours=24,
                                 user=personas.superuser)
    assert feeds.feed_refresh(feed=feed) == "Imported 1 advisories into rhel-9."
    assert identifiers(feed) == {"CVE-2026-2001"}


@pytest.mark.django_db
@pytest.mark.parametrize("body, reason", [
    (b"<html>mirror maintenance</html>", "not JSON"),
    (json.dumps([{"id": "DSA-1", "affected": "everything"}]).encode(), "affected"),
    (("huge", True), f"holds {HUGE:,} bytes; the portal takes feeds up to"),
    (("huge", False), "holds more than"),
    (None, "answered 404"),
    (("drip", None), "did not answer in full within 2 s"),
])
def test_a_feed_that_is_not_osv_or_csaf_or_too_large_imports_nothing_and_says_why(server, feed, body, reason,
                                                                                   monkeypatch):
    monkeypatch.setattr(feeds, "READ_TIMEOUT_SECONDS", 2)  # for the whole answer: a dripping server is cut off
    feeds.feed_refresh(feed=feed)
    before = identifiers(feed)
    if body is None:
        del server.bodies["/osv/all.json"]
    else:
        server.bodies["/osv/all.json"] = body
    outcome = feeds.feed_refresh(feed=feed)
    assert outcome.startswith("Nothing was imported into debian:") and reason in outcome, outcome
    feed.refresh_from_db()
    assert reason in feed.last_error and identifiers(feed) == before  # the advisories as they were
    if isinstance(body, tuple) and body[0] == "huge":
        assert "SUPPLY_CHAIN_FEED_MAX_BYTES" in feed.last_error
    failed = AuditEvent.objects.get(action="advisories.import_failed")
    assert reason in failed.summary and failed.actor_name == "portal"


@pytest.mark.django_db
def test_a_url_the_egress_policy_refuses_is_refused_when_saved_and_when_read(server, personas):
    with pytest.raises(ValidationError, match="The feed's URL"):
        feeds.feed_source_set(name="meta", url="http://169.254.169.254/latest/", refresh_hours=1,
                              user=personas.superuser)
    with pytest.raises(ValidationError, match="https:// or http://"):
        feeds.feed_source_set(name="local", url="file:///etc/passwd", refresh_hours=1, user=personas.superuser)
    with pytest.raises(ValidationError, match="Only portal administrators"):
        feeds.feed_source_set(name="x", url=server.url("/x"), refresh_hours=1, user=personas.admin)
    feed = feeds.feed_source_set(name="x", url=server.url("/x"), refresh_hours=1, user=personas.superuser)
    AdvisoryFeed.objects.filter(pk=feed.pk).update(url="http://127.0.0.1:9/x")  # a port the allow-list never named
    feed.refresh_from_db()
    outcome = feeds.feed_refresh(feed=feed)
    assert outcome.startswith("Nothing was imported") and "EGRESS_ALLOW" in outcome, outcome
    assert server.requests == []


@pytest.mark.django_db
def test_beat_reads_only_the_feeds_that_are_due(server, feed, personas):
    server.bodies["/other.json"] = feed_bytes([JQ_ADVISORY])
    other = feeds.feed_source_set(name="other", url=server.url("/other.json"), refresh_hours=24,
                                  user=personas.superuser)
    services.feed_import(name="by-hand", data=feed_bytes(), source="osv.json", user=personas.superuser)
    advisory_feeds_refresh_due()  # the task beat runs: both are new, so both are due
    assert sorted(server.requests) == ["/osv/all.json", "/other.json"]
    AdvisoryFeed.objects.filter(pk=feed.pk).update(checked_at=timezone.now() - timedelta(hours=7))
    AdvisoryFeed.objects.filter(pk=other.pk).update(checked_at=timezone.now() - timedelta(hours=7))
    advisory_feeds_refresh_due()  # 7 h later: debian (every 6 h) is due, other (every 24 h) is not
    assert sorted(server.requests) == ["/osv/all.json", "/osv/all.json", "/other.json"]


@pytest.mark.django_db
def test_only_portal_administrators_set_and_read_feed_urls_from_the_page(server, feed, personas, client_for):
    from tests.hosts.test_views import is_login

    source = {"name": "debian", "url": server.url("/osv/all.json"), "refresh_hours": "12"}
    refresh = f"/advisories/feeds/{feed.pk}/refresh/"
    for url, data in (("/advisories/feeds/source/", source), (refresh, {})):
        assert is_login(client_for(None).post(url, data))
        assert client_for(personas.outsider).post(url, data).status_code == 403
        assert client_for(personas.viewer).post(url, data).status_code == 403
        assert client_for(personas.admin).post(url, data).status_code == 403  # a team admin: feeds serve every team
        assert client_for(personas.superuser).post(url, data).status_code == 302
    feed.refresh_from_db()
    assert feed.refresh_hours == 12 and feed.advisory_count == 5
    page = client_for(personas.viewer).get("/advisories/").content.decode()
    assert f"read from <code class=\"text-break\">{feed.url}</code> every 12 h" in page
    assert "Read now" not in page and "Read a feed from a URL" not in page
    admin_page = client_for(personas.superuser).get("/advisories/").content.decode()
    assert "Read now" in admin_page and "Read a feed from a URL" in admin_page
