"""Retention reads the registry over its HTTP API (`builds.registryapi`), as skopeo would reach it with the same access:
the team's login answered to the registry's challenge, an insecure registry over plain HTTP, clear words when the
registry is down or refuses the login. Against real docker-registry processes on loopback, and small HTTP(S) servers
for what a registry may answer that docker-registry never does: pages linked by absolute URLs, a token service of its
choosing, redirects."""

import contextlib
import contextvars
import http.server
import json
import ssl
import subprocess
import threading

import pytest

from builds import registry, registryapi
from builds.registry import RegistryAccess
from hosts import simregistry
from tests.builds.fixtures import skopeo_inspect
from tests.tls import write_tls_files


@pytest.fixture(scope="module")
def pushed(oci_registry):
    digests = simregistry.push_demo_image(oci_registry.address, "platform/reads", version="1", tags=["dev", "prod"])
    return oci_registry, digests


def test_a_manifest_and_the_tags_are_read_as_skopeo_inspect_raw_reads_them(pushed):
    oci_registry, digests = pushed
    access = RegistryAccess(registry=oci_registry.address, insecure=True)
    text = registry.raw_manifest(f"{oci_registry.address}/platform/reads:prod", access=access)
    assert registry.manifest_digest(text) == digests[""] == skopeo_inspect(
        f"{oci_registry.address}/platform/reads:prod")["Digest"]
    assert registry.platform_digests(json.loads(text)) == {"amd64": digests["amd64"],
                                                                         "arm64": digests["arm64"]}
    assert {"dev", "prod"} <= registry.tags(f"{oci_registry.address}/platform/reads", access=access)
    assert registry.tags(f"{oci_registry.address}/platform/never-pushed", access=access) == set()
    with pytest.raises(registry.ManifestUnknown, match="manifest unknown"):
        registry.raw_manifest(f"{oci_registry.address}/platform/reads:staging", access=access)


def test_reads_in_one_session_share_its_connections_across_threads(pushed):
    oci_registry, digests = pushed
    access = RegistryAccess(registry=oci_registry.address, insecure=True)
    seen = []
    with registryapi.session(access) as opened:

        def read():
            with registryapi.session_for(access) as session:
                seen.append(session)
                session.manifest("platform/reads", digests["amd64"])

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(read,))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == [opened] * 4
        pool = opened.pool.connection_from_url(f"http://{oci_registry.address}/")
        assert pool.num_connections <= registryapi.CONNECTIONS


def test_a_registry_that_wants_a_login_is_read_with_the_teams_credential_and_refusal_is_said(pushed, auth_registry):
    oci_registry, digests = pushed
    reference = f"{auth_registry.address}/platform/locked:dev"
    subprocess.run(["skopeo", "copy", "--multi-arch=all", "--preserve-digests", "--src-tls-verify=false",
                    "--dest-tls-verify=false", "--dest-creds", f"{auth_registry.user}:{auth_registry.password}",
                    f"docker://{oci_registry.address}/platform/reads:prod", f"docker://{reference}"],
                   capture_output=True, check=True, timeout=60)
    with_login = RegistryAccess(registry=auth_registry.address, username=auth_registry.user,
                                password=auth_registry.password, insecure=True)
    assert registry.manifest_digest(registry.raw_manifest(reference, access=with_login)) == digests[""]
    assert registry.tags(f"{auth_registry.address}/platform/locked", access=with_login) == {"dev"}
    without = RegistryAccess(registry=auth_registry.address, insecure=True)
    with pytest.raises(registry.RegistryError, match="wants a login and the team has no registry credential"):
        registry.raw_manifest(reference, access=without)
    wrong = RegistryAccess(registry=auth_registry.address, username=auth_registry.user, password="wrong", insecure=True)
    with pytest.raises(registry.RegistryError, match="refused the login 'pusher'.*check the team's registry credential"):
        registry.raw_manifest(reference, access=wrong)


def test_a_registry_that_is_down_is_named_and_a_dry_run_deletes_nothing_on_a_guess(egress_allow):
    egress_allow("127.0.0.1:9")
    access = RegistryAccess(registry="127.0.0.1:9", insecure=True)
    with pytest.raises(registry.RegistryError, match=r"cannot reach the registry 127.0.0.1:9: .*Is it running"):
        registry.raw_manifest("127.0.0.1:9/platform/web-os:prod", access=access)


def test_a_verified_registry_is_never_read_over_plain_http(pushed):
    oci_registry, _ = pushed
    access = RegistryAccess(registry=oci_registry.address, insecure=False)
    with pytest.raises(registry.RegistryError, match="cannot reach the registry"):
        registry.raw_manifest(f"{oci_registry.address}/platform/reads:prod", access=access)


class PagingRegistry(http.server.BaseHTTPRequestHandler):
    """A registry whose tag list comes in pages linked by absolute URLs (the API allows them), the second page's link
    on another address when the server's `elsewhere` is set."""

    def do_GET(self):  # noqa: N802 - http.server's name
        address = f"http://127.0.0.1:{self.server.server_port}"
        body, link = b"{}", ""
        if self.path == "/v2/platform/paged/tags/list?n=1000":
            body, link = b'{"tags": ["a", "b"]}', f"{address}/v2/platform/paged/tags/list?n=2&last=b"
        elif self.path == "/v2/platform/paged/tags/list?n=2&last=b":
            body = b'{"tags": ["c"]}'
            link = "http://127.0.0.2:9/v2/platform/paged/tags/list?n=2&last=c" if self.server.elsewhere else ""
        self.send_response(200)
        if link:
            self.send_header("Link", f'<{link}>; rel="next"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_tag_list_paged_by_absolute_urls_is_followed_on_the_registry_only(egress_allow):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PagingRegistry)
    server.elsewhere = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_port}"
        egress_allow(address)
        access = RegistryAccess(registry=address, insecure=True)
        assert registry.tags(f"{address}/platform/paged", access=access) == {"a", "b", "c"}
        server.elsewhere = True  # the login goes with each page: never to another address
        with pytest.raises(registry.RegistryError, match=r"next page of the tag list of platform/paged to another"):
            registry.tags(f"{address}/platform/paged", access=access)
    finally:
        server.shutdown()
        server.server_close()


class Answering(http.server.BaseHTTPRequestHandler):
    """A server that notes each request's path and answers what its server's `answer(handler)` returns:
    (status, headers, body)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.asked.append(self.path)
        status, headers, body = self.server.answer(self)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(answer, *, tls_files=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    server.answer, server.asked = answer, []
    server.address = f"127.0.0.1:{server.server_port}"
    if tls_files:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_files["cert"], tls_files["key"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def wants_a_token_from(realm):
    """A registry that lists one tag to the holder of the token "tok", and sends everyone else to `realm` for it."""
    def answer(request):
        if request.headers.get("Authorization") == "Bearer tok":
            return 200, {}, b'{"tags": ["prod"]}'
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry"'}, b"{}"
    return answer


def hands_out_tok(request):
    return 200, {}, b'{"token": "tok"}'


def test_a_registry_the_egress_policy_refuses_is_never_asked():
    with serving(hands_out_tok) as inside:
        access = RegistryAccess(registry=inside.address, insecure=True)
        with pytest.raises(registry.RegistryError, match=rf"The registry {inside.address} points at 127\.0\.0\.1, .*"
                                                         "EGRESS_ALLOW"):
            registry.tags(f"{inside.address}/platform/web-os", access=access)
        assert inside.asked == []
    metadata = RegistryAccess(registry="169.254.169.254", insecure=True)
    with pytest.raises(registry.RegistryError, match=r"169\.254\.169\.254.*metadata"):
        registry.raw_manifest("169.254.169.254/platform/web-os:prod", access=metadata)


def test_the_token_service_a_registry_names_is_held_to_the_egress_policy_too(egress_allow):
    with serving(hands_out_tok) as tokens, serving(wants_a_token_from("")) as reg:
        reg.answer = wants_a_token_from(f"http://{tokens.address}/token")
        egress_allow(reg.address)  # the registry, not the address inside the network its challenge names
        access = RegistryAccess(registry=reg.address, insecure=True)
        with pytest.raises(registry.RegistryError, match=rf"{reg.address}'s token service points at 127\.0\.0\.1, .*"
                                                         "EGRESS_ALLOW"):
            registry.tags(f"{reg.address}/platform/web-os", access=access)
        assert tokens.asked == []
        egress_allow(tokens.address)
        assert registry.tags(f"{reg.address}/platform/web-os", access=access) == {"prod"}
        assert [path.split("?")[0] for path in tokens.asked] == ["/token"]


# builds.registryapi silences it for the portal's processes; pytest restores the warning filters after collecting.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_registry_reached_over_https_never_has_its_login_sent_to_a_token_service_over_plain_http(tmp_path, egress_allow):
    files = write_tls_files(tmp_path)
    with serving(hands_out_tok) as tokens, serving(wants_a_token_from(""), tls_files=files) as reg:
        reg.answer = wants_a_token_from(f"http://{tokens.address}/token")
        egress_allow(reg.address, tokens.address)
        (tmp_path / "certs.d" / reg.address).mkdir(parents=True)
        (tmp_path / "certs.d" / reg.address / "ca.crt").write_bytes(files["ca"].read_bytes())
        verified = RegistryAccess(registry=reg.address, username="pusher", password="s3cret", insecure=False)
        with registryapi.Session(verified, certs_dirs=(str(tmp_path / "certs.d"),)) as session:
            with pytest.raises(registryapi.APIError, match=r"token service is http://.* over plain HTTP; the portal "
                                                           r"does not send a registry's login.*Mark the team's"):
                session.tags("platform/web-os")
        assert tokens.asked == []
        insecure = RegistryAccess(registry=reg.address, username="pusher", password="s3cret", insecure=True)
        assert registry.tags(f"{reg.address}/platform/web-os", access=insecure) == {"prod"}  # as the operator said


def test_a_registry_that_sends_a_read_elsewhere_is_not_followed_and_says_where(egress_allow):
    with serving(hands_out_tok) as elsewhere:
        def redirect(request):
            return 307, {"Location": f"http://{elsewhere.address}/v2/platform/web-os/tags/list"}, b""

        with serving(redirect) as reg:
            egress_allow(reg.address, elsewhere.address)
            access = RegistryAccess(registry=reg.address, insecure=True)
            with pytest.raises(registry.RegistryError, match=rf"sent the read elsewhere \(HTTP 307, http://"
                                                             rf"{elsewhere.address}/v2/.*does not follow it"):
                registry.tags(f"{reg.address}/platform/web-os", access=access)
        assert elsewhere.asked == []


def test_docker_hub_is_read_where_its_api_answers_not_at_its_name_in_references():
    # Only the address is checked: reaching Docker Hub is not a test's to do.
    for name in ("docker.io", "index.docker.io"):
        with registryapi.Session(RegistryAccess(registry=name)) as session:
            assert session.host == "registry-1.docker.io" and session.registry == name
    with registryapi.Session(RegistryAccess(registry="quay.io")) as session:
        assert session.host == "quay.io"
