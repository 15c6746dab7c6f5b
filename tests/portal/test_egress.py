"""The egress policy: the portal refuses to reach its own network (loopback, private, link-local, multicast, metadata)
on anyone's behalf unless EGRESS_ALLOW names the place, and its own HTTP connects only to the address it checked.

Every consumer (webhooks, git remotes, registries, host-reported images) has its own tests next to its code; this file
holds the policy itself and its HTTP client, against real sockets.
"""

import ipaddress
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from portal import egress


class Server:
    """A real HTTP server on loopback that records what reached it."""

    def __init__(self, status=200, location=""):
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append({"path": self.path, "host": self.headers["Host"]})
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.end_headers()
                self.wfile.write(b"internal secret")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        # stop()'s shutdown() returns at serve_forever's next poll: every 50 ms, not every half second
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    started = []

    def start(**kwargs):
        started.append(Server(**kwargs))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def post(url):
    return egress.post(url, body=b"{}", headers={"Content-Type": "application/json"}, timeout=5, what="The URL")


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("fd12::1", "private"), ("169.254.10.10", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "carrier-grade"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("100.100.100.200", "metadata"),
    ("::ffff:127.0.0.1", "loopback address inside an IPv6"), ("2002:a00:1::", "private address inside an IPv6"),
    ("64:ff9b::a9fe:a9fe", "metadata address inside an IPv6 address"), ("240.0.0.1", "reserved"),
])
def test_addresses_inside_the_network_are_refused_with_the_reason(address, reason):
    assert reason in egress.refusal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_pass(address):
    assert egress.refusal(ipaddress.ip_address(address)) == ""


def test_by_default_nothing_inside_the_network_is_reachable(settings):
    settings.EGRESS_ALLOW = []
    for host in ("127.0.0.1", "localhost", "10.0.0.5", "169.254.169.254", "[fd00:ec2::254]"):
        with pytest.raises(egress.EgressRefused, match="The registry points at"):
            egress.check(host, 443, what="The registry")


def test_a_name_is_judged_by_what_it_resolves_to():
    with pytest.raises(egress.EgressRefused) as refused:
        egress.check("localhost", 80, what="The webhook URL")
    assert "localhost, which resolves to" in str(refused.value) and "loopback" in str(refused.value)
    assert "EGRESS_ALLOW" in str(refused.value)


def test_metadata_names_and_addresses_are_refused_even_when_a_block_allows_them(settings):
    settings.EGRESS_ALLOW = ["169.254.0.0/16", "fd00::/8", "metadata.google.internal"]
    for host in ("169.254.169.254", "fd00:ec2::254"):
        with pytest.raises(egress.EgressRefused, match="metadata"):
            egress.check(host, 80, what="The URL")
    with pytest.raises(egress.EgressRefused, match="metadata service"):
        egress.check("metadata.google.internal", 80, what="The URL")
    assert egress.check("169.254.10.1", 80, what="The URL").addresses  # the rest of the block is allowed


def test_an_allow_list_entry_with_a_port_allows_that_port_only(settings):
    settings.EGRESS_ALLOW = ["127.0.0.1:5000"]
    assert egress.check("127.0.0.1", 5000, what="The registry").addresses == (ipaddress.ip_address("127.0.0.1"),)
    with pytest.raises(egress.EgressRefused):
        egress.check("127.0.0.1", 6379, what="The registry")


def test_the_portals_own_registry_is_allowed(settings):
    settings.EGRESS_ALLOW, settings.REGISTRY_URL = [], "127.0.0.1:5999"
    assert egress.check_image("127.0.0.1:5999/team/web-os:prod", what="The image")
    with pytest.raises(egress.EgressRefused):
        egress.check_image("127.0.0.1:5998/team/web-os:prod", what="The image")


@pytest.mark.parametrize(("entry", "rule"), [
    ("10.0.0.0/8", egress.Rule(network=ipaddress.ip_network("10.0.0.0/8"))),
    ("127.0.0.1:5000", egress.Rule(network=ipaddress.ip_network("127.0.0.1/32"), port=5000)),
    ("[::1]:8080", egress.Rule(network=ipaddress.ip_network("::1/128"), port=8080)),
    ("fd00::/8", egress.Rule(network=ipaddress.ip_network("fd00::/8"))),
    ("Registry.Internal.", egress.Rule(name="registry.internal")),
    ("git.corp:8443", egress.Rule(name="git.corp", port=8443)),
])
def test_allow_list_entries(entry, rule):
    assert egress.parse_rule(entry) == rule


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "host:99999", "[::1]x", "http://x", "a b"])
def test_a_bad_allow_list_entry_stops_the_portal_at_start_up(entry):
    from tests.portal.test_settings import manage, production_env

    result = manage("check", env=production_env(EGRESS_ALLOW=entry))
    assert result.returncode != 0 and "EGRESS_ALLOW" in result.stderr


@pytest.mark.parametrize(("reference", "registry"), [
    ("quay.io/centos-bootc/centos-bootc:stream10", ("quay.io", 443)),
    ("127.0.0.1:5000/a/b@sha256:" + "0" * 64, ("127.0.0.1", 5000)),
    ("localhost:5000/a", ("localhost", 5000)),
    ("[::1]:5000/a", ("::1", 5000)),
    ("localhost/base:latest", None),
    ("busybox", None),
    ("library/busybox:1", None),
])
def test_the_registry_of_an_image_reference(reference, registry):
    assert egress.registry_host(reference) == registry


@pytest.mark.parametrize(("url", "parts"), [
    ("https://git.example.com/a.git", ("https", "git.example.com", 443)),
    ("ssh://git@10.0.0.1:2222/a.git", ("ssh", "10.0.0.1", 2222)),
    ("git@169.254.169.254:team/repo.git", ("ssh", "169.254.169.254", 22)),
    ("git://[::1]/a", ("git", "::1", 9418)),
])
def test_urls_and_scp_like_git_addresses_are_read(url, parts):
    assert egress.split_url(url) == parts


def test_a_name_that_does_not_resolve_is_left_to_the_tool_but_never_connected_to(settings):
    assert egress.check("no-such-host.invalid", 443, what="The registry").addresses == ()
    with pytest.raises(OSError, match="does not resolve"):
        post("http://no-such-host.invalid/hook")


# --- The portal's own HTTP -------------------------------------------------------------------------------------------


def test_a_loopback_receiver_is_refused_and_never_contacted(server, settings):
    settings.EGRESS_ALLOW = []
    s = server()
    with pytest.raises(egress.EgressRefused, match="127.0.0.1, a loopback address"):
        post(s.url)
    with pytest.raises(egress.EgressRefused, match="loopback"):
        post(f"http://localhost:{s.port}/hook")
    assert s.requests == []


def test_a_fake_metadata_address_is_refused_before_any_connection(settings):
    settings.EGRESS_ALLOW = ["169.254.0.0/16"]
    with pytest.raises(egress.EgressRefused, match="metadata"):
        post("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
    with pytest.raises(egress.EgressRefused, match="metadata"):
        post("http://[fd00:ec2::254]/latest/meta-data/")


def test_an_allow_listed_receiver_is_reached(server, settings):
    s = server()
    settings.EGRESS_ALLOW = [f"127.0.0.1:{s.port}"]
    answer = post(s.url + "?x=1")
    assert (answer.status, answer.address) == (200, "127.0.0.1")
    assert s.requests == [{"path": "/hook?x=1", "host": f"127.0.0.1:{s.port}"}]


def test_the_connection_goes_to_the_checked_address_whatever_the_name_resolves_to_next(server, settings, monkeypatch):
    """DNS rebinding: the name resolves to an allowed address when checked and to the metadata address afterwards.
    The resolver (the outside part) is replaced; the portal asks it once and connects to what it checked."""
    s = server()
    settings.EGRESS_ALLOW = [f"127.0.0.1:{s.port}"]
    answers = iter(["127.0.0.1", "169.254.169.254", "169.254.169.254"])
    real = socket.getaddrinfo
    asked = []

    def rebinding_dns(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    answer = post(f"http://rebind.example:{s.port}/hook")
    assert answer.status == 200 and answer.address == "127.0.0.1"
    assert asked == ["rebind.example"]
    assert s.requests == [{"path": "/hook", "host": f"rebind.example:{s.port}"}]


def test_a_redirect_is_an_answer_and_is_not_followed(server, settings):
    inner = server()
    outer = server(status=302, location=inner.url)
    settings.EGRESS_ALLOW = [f"127.0.0.1:{outer.port}"]
    assert post(outer.url).status == 302
    assert len(outer.requests) == 1 and inner.requests == []


def test_user_information_and_other_schemes_are_refused(settings):
    with pytest.raises(egress.EgressRefused, match="user name or password"):
        post("https://user:pw@hooks.example.com/x")
    with pytest.raises(egress.EgressRefused, match="https://"):
        post("ftp://hooks.example.com/x")


# --- Notification webhooks -------------------------------------------------------------------------------------------


def save_webhook(client, team, url):
    from django.urls import reverse

    return client.post(reverse("portal:notification_webhooks", args=[team.slug]),
                       {"name": "chat", "url": url, "events": ["build.failed"], "active": "on"})


@pytest.mark.django_db
def test_a_webhook_at_a_loopback_server_is_a_form_error_and_is_never_contacted(personas, client_for, server, settings):
    from portal.models import NotificationWebhook

    s = server()
    for url in (s.url, f"http://localhost:{s.port}/hook"):
        response = save_webhook(client_for(personas.admin), personas.team, url)
        assert response.status_code == 400
        errors = response.context["form"].errors["url"]
        assert "loopback address" in errors[0] and "EGRESS_ALLOW" in errors[0]
    assert not NotificationWebhook.objects.exists() and s.requests == []


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "says"), [("http://hooks.example.com:99999/x", "not a URL the portal can read"),
                                           ("http://hooks.example.com:0/x", "port 0, which does not exist")])
def test_a_webhook_with_an_impossible_port_is_a_form_error(personas, client_for, url, says):
    response = save_webhook(client_for(personas.admin), personas.team, url)
    assert response.status_code == 400
    assert says in " ".join(response.context["form"].errors["url"])


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
                                 "http://metadata.google.internal/computeMetadata/v1/"])
def test_a_webhook_at_a_metadata_address_is_a_form_error(personas, client_for, url):
    from portal.models import NotificationWebhook

    response = save_webhook(client_for(personas.admin), personas.team, url)
    assert response.status_code == 400 and "metadata" in response.context["form"].errors["url"][0]
    assert not NotificationWebhook.objects.exists()


@pytest.mark.django_db
def test_an_allow_listed_webhook_is_delivered_and_keeps_its_status_code_not_the_body(personas, client_for, server,
                                                                                      settings):
    from portal import notifications
    from portal.models import DeliveryStatus, NotificationWebhook

    s = server()
    settings.EGRESS_ALLOW = [f"127.0.0.1:{s.port}"]
    assert save_webhook(client_for(personas.admin), personas.team, s.url).status_code == 200
    hook = NotificationWebhook.objects.get()
    delivery = notifications.webhook_test(hook=hook, user=personas.admin)
    assert notifications.webhook_attempt(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_code) == (DeliveryStatus.DELIVERED, 200)
    assert delivery.duration_ms is not None and len(s.requests) == 1
    assert "response_excerpt" not in {f.name for f in type(delivery)._meta.get_fields()}
    page = client_for(personas.admin).get(hook.get_absolute_url()).content.decode()
    assert "HTTP 200" in page and "internal secret" not in page


@pytest.mark.django_db
def test_a_webhook_whose_address_is_no_longer_allowed_fails_at_once_without_contacting_it(personas, server,
                                                                                          settings):
    from portal import notifications
    from portal.models import DeliveryStatus, NotificationWebhook

    s = server()
    hook = NotificationWebhook.objects.create(team=personas.team, name="old", url=s.url, events=["build.failed"])
    delivery = notifications.webhook_test(hook=hook, user=personas.admin)
    assert notifications.webhook_attempt(delivery_id=delivery.pk) is None, "no retry"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1
    assert "loopback address" in delivery.error and delivery.response_code is None
    assert s.requests == []


# --- Registries and what a Containerfile fetches ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_definition_pushing_to_a_loopback_or_metadata_registry_is_a_form_error(personas, client_for, server):
    from django.urls import reverse

    from builds.models import ImageDefinition

    s = server()
    for repository, reason in ((f"127.0.0.1:{s.port}/platform/web-os", "loopback"),
                               ("169.254.169.254/platform/web-os", "metadata")):
        response = client_for(personas.developer).post(reverse("builds:definition_create"), {
            "team": personas.team.pk, "name": "web-os", "repository": repository, "platforms": ["linux/amd64"],
            "build_args": "", "schedule": "", "timeout_minutes": 60})
        assert response.status_code == 400
        assert reason in " ".join(response.context["form"].errors["repository"])
    assert not ImageDefinition.objects.exists() and s.requests == []


@pytest.mark.django_db
def test_a_registry_login_for_a_loopback_registry_is_a_form_error(personas, client_for, server):
    from django.urls import reverse

    from builds.models import RegistryCredential

    s = server()
    response = client_for(personas.admin).post(reverse("builds:credential_create", args=[personas.team.slug]), {
        "registry": f"127.0.0.1:{s.port}", "username": "u", "password": "p"})
    assert response.status_code == 400 and "loopback" in response.content.decode()
    assert not RegistryCredential.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("line", "reason"), [
    ("FROM 127.0.0.1:{port}/library/base:1", "loopback"),
    ("FROM 169.254.169.254:80/library/base:1", "metadata"),
    ("FROM localhost/base:latest\nCOPY --from=127.0.0.1:{port}/tools:1 /bin/x /x", "loopback"),
    ("FROM localhost/base:latest\nADD http://127.0.0.1:{port}/secret /secret", "loopback"),
    ("FROM localhost/base:latest\nADD http://169.254.169.254/latest/meta-data/iam/ /creds", "metadata"),
    ("FROM localhost/base:latest\nARG SRC=http://localhost:{port}/x\nADD ${{SRC}} /x", "loopback"),
])
def test_what_a_containerfile_would_fetch_from_inside_the_network_is_refused_on_save(personas, server, line, reason):
    from django.core.exceptions import ValidationError

    from builds import services

    s = server()
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    with pytest.raises(ValidationError) as refused:
        services.revision_create(definition=definition, user=personas.developer,
                                 containerfile=line.format(port=s.port) + "\nRUN true\n")
    [message] = refused.value.message_dict["containerfile"]
    assert message.startswith("line ") and reason in message
    assert not definition.revisions.exists() and s.requests == []


@pytest.mark.django_db
def test_an_allow_listed_base_image_registry_is_accepted(personas, server, settings):
    from builds import services

    s = server()
    settings.EGRESS_ALLOW = [f"127.0.0.1:{s.port}"]
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM 127.0.0.1:{s.port}/library/base:1\nRUN true\n")
    assert revision.number == 1


@pytest.mark.slow
@pytest.mark.django_db
def test_a_build_whose_registry_is_no_longer_allowed_is_refused_before_podman_starts(
        personas, server, settings, local_builder, build_settings):
    from builds import pipeline, services
    from builds.models import Build, BuildStatus
    from portal.logsink import lines_after

    s = server()
    settings.EGRESS_ALLOW = [f"127.0.0.1:{s.port}"]
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os",
                                            repository=f"127.0.0.1:{s.port}/platform/web-os")
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile="FROM localhost/base:latest\nRUN echo never-run\n")
    settings.EGRESS_ALLOW = []
    build = services.build_start(revision=revision, user=personas.developer)
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    log = "\n".join(text for _, text in lines_after(build.run))
    assert build.status == BuildStatus.FAILED
    assert build.run.exit_reason.startswith("Refused before podman started: The registry of 127.0.0.1:")
    assert "loopback address" in build.run.exit_reason
    assert "STEP" not in log and "never-run" not in log
    assert s.requests == []


# --- Images reported by hosts ----------------------------------------------------------------------------------------


def reporting_host(personas, reference):
    """A host whose last poll stored `reference` as its spec.image: what a (compromised) host says it runs."""
    from hosts.models import Host
    from hosts.services import host_create

    host = host_create(team=personas.team, name=f"web-{Host.objects.count()}", address="192.0.2.10", actor=None)
    Host.objects.filter(pk=host.pk).update(spec_image=reference)
    return host


@pytest.mark.django_db
def test_an_image_reported_by_a_host_at_a_loopback_or_metadata_registry_is_never_fetched(personas, server):
    from hosts import drift
    from hosts.models import ReferenceDigest

    s = server()
    loopback, metadata = f"127.0.0.1:{s.port}/platform/web-os:prod", "169.254.169.254/latest/meta-data:x"
    reporting_host(personas, loopback)
    reporting_host(personas, metadata)
    results = drift.refresh_reference_digests(max_age_seconds=0)
    assert "loopback address" in results[loopback] and "metadata" in results[metadata]
    assert not ReferenceDigest.objects.exists() and s.requests == []


@pytest.mark.slow
@pytest.mark.django_db
def test_an_image_reported_by_a_host_at_an_allowed_registry_is_resolved(personas, oci_registry):
    from hosts import drift
    from hosts.models import ReferenceDigest
    from hosts.simregistry import push_demo_image

    digests = push_demo_image(oci_registry.address, "platform/egress", version="1.0", tags=["prod"])
    reference = f"{oci_registry.address}/platform/egress:prod"
    reporting_host(personas, reference)
    results = drift.refresh_reference_digests(max_age_seconds=0)
    assert results[reference][""] == digests[""]
    assert ReferenceDigest.objects.filter(reference=reference).exists()


@pytest.mark.django_db
def test_a_tracked_image_at_a_loopback_registry_is_a_form_error(personas):
    from django.core.exceptions import ValidationError

    from hosts.services import host_create

    with pytest.raises(ValidationError) as refused:
        host_create(team=personas.team, name="web-01", address="192.0.2.10", actor=None,
                    tracked_image="127.0.0.1:6379/platform/web-os:prod")
    assert "loopback" in refused.value.message_dict["tracked_image"][0]


# --- AMI endpoints ---------------------------------------------------------------------------------------------------


def private_aws_dns(monkeypatch):
    """The resolver (the outside part) of a VPC with interface endpoints: the region's AWS endpoints resolve to a
    private address."""
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host.endswith(".amazonaws.com"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.0.5", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.mark.django_db
def test_an_ami_upload_whose_endpoints_resolve_inside_the_network_is_refused_unless_allowed(personas, settings,
                                                                                             monkeypatch):
    from django.core.exceptions import ValidationError

    from builds.diskimages import services as diskimages
    from builds.diskimages import services_presets as presets
    from tests.diskimages.rows import succeeded_build

    build = succeeded_build(personas.team, personas.developer)
    credential = presets.cloud_credential_save(team=personas.team, user=personas.admin, name="ec2",
                                                  access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="x")
    private_aws_dns(monkeypatch)
    ask = dict(user=personas.developer, build=build, types=["ami"], aws_bucket="images", aws_region="eu-west-1",
               aws_ami_name="web-os 1", aws_credential=credential)
    with pytest.raises(ValidationError) as refused:
        diskimages.disk_image_request(**ask)
    [message, *_] = refused.value.message_dict["aws_region"]
    assert "s3.eu-west-1.amazonaws.com, which resolves to 10.20.0.5, a private address" in message
    settings.EGRESS_ALLOW = ["s3.eu-west-1.amazonaws.com", "ec2.eu-west-1.amazonaws.com"]
    assert diskimages.disk_image_request(**ask).aws_region == "eu-west-1"


# --- Git remotes -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_git_connects_to_the_checked_address_not_to_what_its_own_lookup_says(
        personas, git_server, settings, monkeypatch, oci_registry, local_builder, build_settings):
    """The repository's host name resolves only for the portal's check (the resolver, an outside part, is replaced in
    the test process); git, a separate process, finds nothing under that name and reaches the server only because
    it is pinned to the checked address."""
    from builds import integrations, pipeline, services
    from builds.models import Build, BuildStatus
    from portal.logsink import lines_after

    server = git_server(token="t0ken-for-pinning")
    name = "git.pinned.invalid"
    real = socket.getaddrinfo

    def dns(host, port, *args, **kwargs):
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    url = server.repository("os", {"motd": "pinned\n"}).replace("127.0.0.1", name)
    integrations.git_credential_save(team=personas.team, user=personas.admin, host=f"{name}:{server.port}",
                                     username="ci", token="t0ken-for-pinning")
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    revision = services.revision_create(definition=definition, user=personas.developer, context_kind="git",
                                        git_url=url, git_ref="main",
                                        containerfile="FROM localhost/base:latest\nCOPY motd /etc/motd\n")
    build = services.build_start(revision=revision, user=personas.developer)
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    assert server.authorized
    log = "\n".join(text for _, text in lines_after(build.run))
    assert f"http.curloptResolve={name}:{server.port}:127.0.0.1" in log
    unpinned = subprocess.run(["git", "ls-remote", url], capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], "GIT_TERMINAL_PROMPT": "0"})
    assert unpinned.returncode != 0 and "Could not resolve host" in unpinned.stderr


# --- No 500 for any URL --------------------------------------------------------------------------------------------

URL_NASTY = ["", " ", "\x00", "http://[::1", "http://h:99999/", "http://h:0/", "https://a@b@c/", "git@[::1]:x",
             "http://%00/", "http://xn--/", "http://" + "a" * 300 + ".com/", "ssh://:@/", "https://:pw@h/", "//h/x",
             "http://127.1/", "http://0x7f000001/", "http://[::ffff:127.0.0.1]/", "file:///etc/passwd", "😀://x",
             "http://h/\r\nX: y", "-u", "http://[fd00:ec2::254]:80/", "ftp://a/", "h:", "http://é.example/x"]


@pytest.mark.django_db
def test_no_500_for_any_value_in_the_fields_that_name_a_place_on_the_network(personas, client_for):
    from django.urls import reverse

    from builds import services

    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    slug = personas.team.slug
    forms = [
        (personas.admin, reverse("portal:notification_webhooks", args=[slug]),
         {"name": "x", "url": "", "events": ["build.failed"]}, "url"),
        (personas.admin, reverse("builds:git_credential_create", args=[slug]), {"host": "", "username": "u", "token": "t"},
         "host"),
        (personas.admin, reverse("builds:credential_create", args=[slug]), {"registry": "", "username": "u", "password": "p"},
         "registry"),
        (personas.developer, reverse("builds:revision_create", args=[definition.pk]),
         {"containerfile": "FROM localhost/base:latest\n", "context_kind": "git", "git_ref": "main", "git_url": ""},
         "git_url"),
        (personas.developer, reverse("builds:definition_create"),
         {"team": personas.team.pk, "name": "other", "platforms": ["linux/amd64"], "timeout_minutes": 60,
          "repository": ""}, "repository"),
        (personas.admin, reverse("hosts:host_add"),
         {"team": personas.team.pk, "name": "web-01", "address": "192.0.2.10", "port": 22, "ssh_user": "root",
          "tracked_image": ""}, "tracked_image"),
    ]
    for user, path, data, field in forms:
        client = client_for(user)
        for value in URL_NASTY:
            response = client.post(path, {**data, field: value})
            assert response.status_code < 500, (path, field, value)
    for value in URL_NASTY:
        containerfile = f"FROM localhost/base:latest\nADD {value or 'x'} /x\nCOPY --from={value or 'x'} /a /b\n"
        response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]), {
            "containerfile": containerfile, "context_kind": "none"})
        assert response.status_code < 500, value
