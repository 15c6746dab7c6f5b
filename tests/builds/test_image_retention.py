"""Image retention against a real registry: the dry run says what goes and why each other image stays; applying it
deletes the manifests through the registry API and the registry's garbage collection frees their blobs, while every
digest a stage holds or held, a host boots or keeps as rollback, a disk image or an open promotion refers to, or a
person pinned, stays.

The scene (30 builds of one definition, each a real image with a layer of its own and a shared base layer, pushed
straight through the registry API; policy: newest 3, 10 days, 1 stage promotion back):
- builds 26-30 are younger than 10 days (28-30 are also the newest 3);
- prod holds build 10 and held build 8 one promotion ago; the registry's dev tag points at build 15 (moved outside
  the portal);
- host web-01 rolled back to build 3 (it boots it) and keeps build 12 as its rollback deployment;
- a disk image was made from build 7, a boot test passed on build 5; build 1 is pinned; a promotion of build 18 to
  test waits for approval.
Everything else (16 images) goes.
"""

import gzip
import hashlib
import http.client
import io
import json
import os
import subprocess
import tarfile
import tempfile
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from builds import retention, services
from builds.diskimages.models import BootTest
from builds.models import Build, ImageCleanup, ImageRetentionPolicy, RegistryCredential
from builds.releases.models import Promotion, PromotionStatus, StageHistory
from builds.supplychain import trust
from hosts import simregistry
from hosts.models import Host
from portal.logsink import lines_after
from portal.models import AuditEvent, Run, RunKind, RunStatus
from portal.services import run_create, run_finish, run_start
from tests.builds.fixtures import Registry
from tests.diskimages.rows import finished_conversion
from tests.helpers import require_tool

OWN_LAYER_BYTES = 64 * 1024
KEPT = {1, 3, 5, 7, 8, 10, 12, 15, 18, 26, 27, 28, 29, 30}
DOOMED = sorted(set(range(1, 31)) - KEPT)


# --- A registry of the module's own (its disk is measured), and images pushed through its API ----------------------


@pytest.fixture(scope="module")
def gc_registry():
    require_tool("docker-registry", "skopeo")
    registry = Registry(tempfile.mkdtemp(prefix="portal-retention-registry-"))
    yield registry
    registry.stop()


_connections: dict[str, http.client.HTTPConnection] = {}


def _http(method, url, data=None, headers=None):
    """One request to a loopback registry over a connection kept open per registry: a scene takes some 350 of them,
    and a new connection for each cost more than the request (9 ms against 3.6 ms at a load of 8). A connection the
    registry closed (or a registry stopped since) is opened again once."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    for attempt in (1, 2):
        connection = _connections.setdefault(parts.netloc, http.client.HTTPConnection(parts.netloc, timeout=10))
        try:
            connection.request(method, path, body=data, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.headers), response.read()
        except (http.client.HTTPException, OSError):
            connection.close()
            del _connections[parts.netloc]
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def push_image(address, repository, *, content: bytes, base: bytes, tags):
    """One single-architecture image (a shared base layer and a layer of its own) by digest and under `tags`."""
    root = f"http://{address}/v2/{repository}"

    def upload(blob):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        if _http("HEAD", f"{root}/blobs/{digest}")[0] == 200:
            return digest
        status, headers, _ = _http("POST", f"{root}/blobs/uploads/")
        assert status == 202, status
        location = headers["Location"]
        location = location if location.startswith("http") else f"http://{address}{location}"
        status, _, body = _http("PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}", data=blob,
                                headers={"Content-Type": "application/octet-stream"})
        assert status == 201, (status, body)
        return digest

    layers = [_layer("base", base), _layer("own", content)]
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest() for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"containers.bootc": "1"}},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": upload(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": upload(layer),
                    "size": len(layer)} for layer in layers],
    }).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    for ref in [digest, *tags]:
        status, _, body = _http("PUT", f"{root}/manifests/{ref}", data=manifest,
                                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert status == 201, (status, body)
    return digest, len(manifest) + len(config) + len(layers[1])


def _layer(name, data):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"usr/share/{name}")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def blob_bytes(registry):
    """Bytes of every blob the registry stores on disk (manifests, configs, layers)."""
    blobs = Path(registry.directory) / "data" / "docker" / "registry" / "v2" / "blobs"
    return sum(path.stat().st_size for path in blobs.rglob("data"))


def exists(reference):
    """Whether the registry serves `reference`'s manifest: what `skopeo inspect --raw` asks it (a GET of
    /v2/<repository>/manifests/<tag or digest>), without starting skopeo for each of the sixty or so looks a test
    takes."""
    registry, repository, ref = simregistry.split_reference(reference)
    status, _, _ = _http("GET", f"http://{registry}/v2/{repository}/manifests/{ref}",
                         headers={"Accept": ", ".join(simregistry.MANIFEST_TYPES)})
    assert status in (200, 404), (reference, status)
    return status == 200


def copy_tag(source, destination):
    subprocess.run(["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{source}", f"docker://{destination}"], check=True, capture_output=True, timeout=60)


# --- The scene -----------------------------------------------------------------------------------------------------


class Scene:
    def __init__(self, personas, registry, *, builds=30):
        self.personas, self.registry = personas, registry
        team = personas.team
        name = f"web-os-{os.urandom(3).hex()}"
        self.repository = f"{registry.address}/platform/{name}"
        RegistryCredential.objects.get_or_create(team=team, registry=registry.address, defaults={"insecure": True})
        self.definition = services.definition_create(team=team, user=personas.developer, name=name,
                                                     repository=self.repository)
        revision = services.revision_create(definition=self.definition, user=personas.developer,
                                            containerfile="FROM scratch\n")
        base = os.urandom(OWN_LAYER_BYTES)
        now = timezone.now()
        self.builds, self.own_bytes = {}, {}
        for number in range(1, builds + 1):
            digest, own = push_image(registry.address, f"platform/{name}", content=os.urandom(OWN_LAYER_BYTES),
                                     base=base, tags=[f"build-{number}"])
            run = run_create(kind=RunKind.BUILD, title=f"Build {number}", team=team, started_by=personas.developer)
            run_start(run)
            run_finish(run, status=RunStatus.SUCCEEDED)
            pushed = now - timedelta(days=(builds - number) * 2, hours=1)
            self.builds[number] = Build.objects.create(
                definition=self.definition, revision=revision, number=number, run=run, platform="linux/amd64",
                repository=self.repository, digest=digest, size=OWN_LAYER_BYTES * 2, architecture="amd64",
                os="linux", tags=[f"build-{number}"], pushed_at=pushed)
            self.own_bytes[number] = own
        self.stages = {stage.name: stage for stage in team.stages.all()}

    def digest(self, number):
        return self.builds[number].digest

    def ref(self, number):
        return f"{self.repository}@{self.digest(number)}"

    def stage_holds(self, stage, *numbers):
        """The stage's history, oldest first, ending on the last number; the registry's tag moved with it."""
        for number in numbers:
            StageHistory.objects.create(stage=self.stages[stage], definition=self.definition, digest=self.digest(number),
                                        build=self.builds[number])
            copy_tag(self.ref(number), f"{self.repository}:{stage}")


@pytest.fixture
def scene(personas, gc_registry, settings):
    settings.REGISTRY_GC_COMMAND = f"docker-registry garbage-collect {gc_registry.directory}/config.yml"
    scene = Scene(personas, gc_registry)
    ImageRetentionPolicy.objects.create(team=personas.team, definition=scene.definition, keep_last=3, keep_days=10,
                                        keep_stage_history=1)
    scene.stage_holds("prod", 8, 10)
    copy_tag(scene.ref(15), f"{scene.repository}:dev")  # moved outside the portal: no history says so
    Host.objects.create(team=personas.team, name="web-01", address="127.0.0.1", booted_digest=scene.digest(3),
                        rollback_digest=scene.digest(12), rolled_back=True)
    finished_conversion(scene.builds[7], personas.developer)
    boot = run_create(kind=RunKind.BOOT_TEST, title="Boot test", team=personas.team)
    run_start(boot)
    run_finish(boot, status=RunStatus.SUCCEEDED)
    BootTest.objects.create(team=personas.team, definition=scene.definition, build=scene.builds[5],
                            repository=scene.repository, digest=scene.digest(5), run=boot, firmware="bios",
                            memory_mb=512, cpus=1, marker="login:", boot_seconds_limit=60)
    Build.objects.filter(pk=scene.builds[1].pk).update(pinned=True)
    Promotion.objects.create(definition=scene.definition, build=scene.builds[18], digest=scene.digest(18),
                             target_stage=scene.stages["test"], reason="next", requested_by=personas.developer,
                             status=PromotionStatus.PENDING)
    return scene


def apply(scene, user, digests, django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        cleanup = services.image_cleanup_start(definition=scene.definition, user=user, digests=digests, **kwargs)
    return ImageCleanup.objects.select_related("run").get(pk=cleanup.pk)


# --- The dry run -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_dry_run_lists_exactly_what_nothing_keeps_and_why_each_other_image_stays(scene, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no skopeo: a dry run reads the registry over its HTTP API
    plan = retention.plan(scene.definition)
    monkeypatch.undo()

    assert sorted(v.newest.number for v in plan.doomed) == DOOMED
    reasons = {v.newest.number: "; ".join(v.reasons) for v in plan.kept}
    assert sorted(reasons) == sorted(KEPT)
    assert reasons[10] == "stage prod holds it"
    assert reasons[8] == "stage prod held it 1 promotion(s) ago (a rollback may want it)"
    assert reasons[15] == "the registry's tag dev points at it"
    assert reasons[3] == "host web-01 boots it"
    assert reasons[12] == "host web-01 keeps it as rollback"
    assert reasons[7].startswith("disk image #") and reasons[7].endswith("was made from it")
    assert reasons[1] == "build 1 is pinned"
    assert reasons[5] == f"boot test #{BootTest.objects.get().pk} passed on it"
    assert reasons[18] == f"promotion #{Promotion.objects.get().pk} to test is waiting for approval"
    assert reasons[30].startswith("build 30 is among the newest 3")
    assert reasons[26].startswith("build 26 was built 8 d ago (the policy keeps 10 days)")
    # Only what no kept image shares is freed: each doomed image's manifest, config and own layer, never the base.
    assert plan.bytes_freed == sum(scene.own_bytes[n] for n in DOOMED)
    assert all(exists(scene.ref(n)) for n in range(1, 31)), "a dry run deletes nothing"


@pytest.mark.django_db(transaction=True)
def test_applying_it_deletes_those_images_and_garbage_collection_frees_their_blobs_on_disk(
        scene, personas, eager_tasks, django_capture_on_commit_callbacks):
    plan = retention.plan(scene.definition)
    on_disk = blob_bytes(scene.registry)

    cleanup = apply(scene, personas.admin, plan.doomed_digests(), django_capture_on_commit_callbacks,
                    bytes_expected=plan.bytes_freed)

    assert cleanup.run.status == RunStatus.SUCCEEDED, cleanup.run.exit_reason
    assert sorted(cleanup.deleted) == sorted(scene.digest(n) for n in DOOMED) and not cleanup.kept
    assert cleanup.garbage_collected
    assert on_disk - blob_bytes(scene.registry) == plan.bytes_freed
    for number in range(1, 31):
        assert exists(scene.ref(number)) == (number in KEPT), number
        assert exists(f"{scene.repository}:build-{number}") == (number in KEPT), f"tag build-{number}"
    assert exists(f"{scene.repository}:prod") and exists(f"{scene.repository}:dev")
    # The host that rolled back still finds both of its deployments' images, as a simulated host pulls them.
    host = Host.objects.get(name="web-01")
    for digest in (host.booted_digest, host.rollback_digest):
        assert simregistry.resolve_image(f"{scene.repository}@{digest}")["digest"] == digest
    deleted = Build.objects.filter(definition=scene.definition, image_deleted_at__isnull=False)
    assert sorted(deleted.values_list("number", flat=True)) == DOOMED
    audited = AuditEvent.objects.filter(action="images.delete", team=personas.team)
    assert sorted(event.detail["digest"] for event in audited) == sorted(cleanup.deleted)
    # The next dry run has nothing left to delete.
    assert retention.plan(scene.definition).doomed == []


def sign_by_hand(scene, number, lookaside):
    """What a GPG signing leaves in the lookaside store (containers/image's layout) and what cosign pushes beside the
    image: a signature attachment tagged sha256-<hex>.sig."""
    store = Path(trust.lookaside_path(str(lookaside), scene.repository, scene.digest(number)))
    store.mkdir(parents=True)
    (store / "signature-1").write_bytes(os.urandom(300))
    tag = scene.digest(number).replace(":", "-") + ".sig"
    push_image(scene.registry.address, scene.repository.split("/", 1)[1], content=os.urandom(512), base=b"sig",
               tags=[tag])
    return store, f"{scene.repository}:{tag}"


@pytest.mark.django_db(transaction=True)
def test_an_images_signatures_go_with_it_and_a_kept_images_stay(scene, personas, settings, tmp_path, eager_tasks,
                                                                 django_capture_on_commit_callbacks):
    settings.SUPPLY_CHAIN_LOOKASIDE_DIR = str(tmp_path / "lookaside")
    doomed_store, doomed_attachment = sign_by_hand(scene, DOOMED[0], tmp_path / "lookaside")
    kept_store, kept_attachment = sign_by_hand(scene, 10, tmp_path / "lookaside")

    cleanup = apply(scene, personas.admin, [scene.digest(DOOMED[0])], django_capture_on_commit_callbacks)

    assert cleanup.run.status == RunStatus.SUCCEEDED, cleanup.run.exit_reason
    assert not exists(scene.ref(DOOMED[0])) and not doomed_store.exists() and not exists(doomed_attachment)
    assert kept_store.exists() and exists(kept_attachment) and exists(scene.ref(10))
    log = "\n".join(text for _, text in lines_after(cleanup.run))
    assert log.index(f"Deleted {scene.ref(DOOMED[0])}") < log.index("Removed with")
    assert "1 GPG signature(s) from the lookaside store; the attachment sha256-" in log
    event = AuditEvent.objects.get(action="signatures.delete")
    assert event.detail["digest"] == scene.digest(DOOMED[0]) and len(event.detail["removed"]) == 2


@pytest.mark.django_db(transaction=True)
def test_the_engine_keeps_what_came_into_use_after_the_dry_run_even_when_asked_directly(
        scene, personas, eager_tasks, django_capture_on_commit_callbacks):
    doomed = retention.plan(scene.definition, measure=False).doomed_digests()
    Host.objects.create(team=personas.team, name="web-02", address="127.0.0.1", staged_digest=scene.digest(2))

    cleanup = apply(scene, personas.admin, [*doomed, scene.digest(10)], django_capture_on_commit_callbacks)

    assert cleanup.run.status == RunStatus.SUCCEEDED, cleanup.run.exit_reason
    assert cleanup.kept == {scene.digest(2): ["host web-02 has it staged"], scene.digest(10): ["stage prod holds it"]}
    assert exists(scene.ref(2)) and exists(scene.ref(10)) and exists(f"{scene.repository}:prod")
    assert len(cleanup.deleted) == len(DOOMED) - 1


@pytest.mark.django_db(transaction=True)
def test_a_registry_that_refuses_deletes_is_named_with_the_setting_and_nothing_is_half_deleted(
        personas, eager_tasks, django_capture_on_commit_callbacks, settings):
    require_tool("docker-registry", "skopeo")
    settings.REGISTRY_GC_COMMAND = ""
    registry = Registry(tempfile.mkdtemp(prefix="portal-retention-nodelete-"), delete=False)
    try:
        scene = Scene(personas, registry, builds=4)
        ImageRetentionPolicy.objects.create(team=personas.team, definition=scene.definition, keep_last=1, keep_days=0,
                                            keep_stage_history=0)
        doomed = retention.plan(scene.definition).doomed_digests()
        assert len(doomed) == 3

        cleanup = apply(scene, personas.admin, doomed, django_capture_on_commit_callbacks)

        assert cleanup.run.status == RunStatus.FAILED
        assert "storage.delete.enabled" in cleanup.run.exit_reason
        assert cleanup.deleted == []
        assert all(exists(scene.ref(n)) for n in range(1, 5))
        assert not Build.objects.filter(definition=scene.definition, image_deleted_at__isnull=False).exists()
    finally:
        registry.stop()


@pytest.mark.django_db(transaction=True)
def test_a_policy_applied_every_day_is_cleaned_up_by_the_retention_pass_which_reports_it(scene, eager_tasks):
    from portal.retention import retention_run

    ImageRetentionPolicy.objects.filter(definition=scene.definition).update(on_schedule=True)

    record = retention_run(trigger="test")

    assert record.removed["images"]["count"] == len(DOOMED), record.errors
    cleanup = ImageCleanup.objects.select_related("run").get(definition=scene.definition)
    assert record.removed["images"]["cleanups"] == {str(scene.definition): cleanup.pk}
    assert cleanup.run.trigger == "schedule" and cleanup.run.status == RunStatus.SUCCEEDED, cleanup.run.exit_reason
    assert sorted(cleanup.deleted) == sorted(scene.digest(n) for n in DOOMED)
    assert retention_run(trigger="test").removed["images"]["count"] == 0  # nothing left to queue


# --- Refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_policy_keeps_at_least_the_newest_build_and_refuses_negative_numbers(personas):
    from tests.diskimages.rows import succeeded_build

    build = succeeded_build(personas.team, personas.developer)
    with pytest.raises(ValidationError) as refused:
        services.image_retention_policy_save(team=personas.team, definition=build.definition, user=personas.admin,
                                             keep_last=0, keep_days=-1, keep_stage_history=0)
    assert set(refused.value.message_dict) == {"keep_last", "keep_days"}
    assert not ImageRetentionPolicy.objects.exists()


@pytest.mark.django_db
def test_a_cleanup_refuses_digests_that_are_not_the_definitions_images(personas):
    from tests.diskimages.rows import succeeded_build

    build = succeeded_build(personas.team, personas.developer)
    for digests, words in (([], "Nothing to delete"), (["latest"], "is not an image digest"),
                           (["sha256:" + "9" * 64], "is not an image of")):
        with pytest.raises(ValidationError, match=words):
            services.image_cleanup_start(definition=build.definition, user=personas.admin, digests=digests)
    assert not ImageCleanup.objects.exists() and not Run.objects.filter(kind=RunKind.MAINTENANCE).exists()


# --- Who may see and do what -----------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestAccess:
    @pytest.fixture
    def definition(self, personas, settings):
        from tests.diskimages.rows import succeeded_build

        settings.REGISTRY_URL = "127.0.0.1:9"  # nothing answers: the dry run says so instead of guessing
        return succeeded_build(personas.team, personas.developer).definition

    def test_the_dry_run_page(self, client_for, personas, definition):
        from django.urls import reverse

        url = reverse("builds:definition_retention", args=[definition.pk])
        assert client_for(None).get(url).status_code == 302
        assert client_for(personas.outsider).get(url).status_code == 404
        for reader in ("viewer", "developer", "helpdesk"):
            response = client_for(getattr(personas, reader)).get(url)
            if reader == "helpdesk":
                assert response.status_code == 404
                continue
            assert response.status_code == 200, reader
            assert "Save the policy" not in response.content.decode()
        page = client_for(personas.admin).get(url).content.decode()
        assert "Save the policy" in page and "nothing is deleted until it can" in page

    def test_saving_the_policy(self, client_for, personas, definition):
        from django.urls import reverse

        url = reverse("builds:definition_retention_policy", args=[definition.pk])
        data = {"keep_last": 2, "keep_days": 7, "keep_stage_history": 1}
        assert client_for(None).post(url, data).status_code == 302
        assert client_for(personas.outsider).post(url, data).status_code == 404
        assert client_for(personas.viewer).post(url, data).status_code == 403
        assert client_for(personas.developer).post(url, data).status_code == 403
        assert client_for(personas.admin).get(url).status_code == 405
        assert not ImageRetentionPolicy.objects.exists()
        bad = client_for(personas.admin).post(url, {**data, "keep_last": 0})
        assert bad.status_code == 400 and "greater than or equal to 1" in bad.content.decode()
        assert client_for(personas.admin).post(url, data).status_code == 302
        policy = ImageRetentionPolicy.objects.get(definition=definition)
        assert (policy.keep_last, policy.keep_days, policy.keep_stage_history) == (2, 7, 1)

    def test_applying_it(self, client_for, personas, definition):
        from django.urls import reverse

        url = reverse("builds:definition_retention_apply", args=[definition.pk])
        data = {"digest": [definition.builds.get().digest]}
        assert client_for(None).post(url, data).status_code == 302
        assert client_for(personas.outsider).post(url, data).status_code == 404
        for role in ("viewer", "developer", "approver", "operator"):
            assert client_for(getattr(personas, role)).post(url, data).status_code == 403, role
        assert client_for(personas.admin).get(url).status_code == 405
        assert not ImageCleanup.objects.exists()
        response = client_for(personas.admin).post(url, data)
        cleanup = ImageCleanup.objects.get()
        assert response.status_code == 302 and response.url == reverse("portal:run_detail", args=[cleanup.run_id])
        assert client_for(personas.viewer).get(response.url).status_code == 200
        assert client_for(personas.outsider).get(response.url).status_code == 404

    def test_pinning_a_build(self, client_for, personas, definition):
        from django.urls import reverse

        build = definition.builds.get()
        url = reverse("builds:build_pin", args=[build.pk])
        assert client_for(None).post(url, {"pinned": "1"}).status_code == 302
        assert client_for(personas.outsider).post(url, {"pinned": "1"}).status_code == 404
        assert client_for(personas.viewer).post(url, {"pinned": "1"}).status_code == 403
        assert client_for(personas.developer).get(url).status_code == 405
        assert not Build.objects.get(pk=build.pk).pinned
        assert client_for(personas.developer).post(url, {"pinned": "1"}).status_code == 302
        assert Build.objects.get(pk=build.pk).pinned
        assert AuditEvent.objects.filter(action="build.pin", object_id=str(build.pk)).exists()


# --- As a person sees it ---------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_dry_run_page_in_a_browser(scene, personas, portal_server, monkeypatch):
    from django.urls import reverse

    from tests.browser import browser_page, log_in, screenshot, settle

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    with browser_page() as page:
        log_in(page, portal_server.url, personas.admin.username)
        page.goto(portal_server.url + reverse("builds:definition_retention", args=[scene.definition.pk]))
        settle(page)
        summary = page.locator("#retention-summary").inner_text()
        assert f"{len(DOOMED)} of 30 images would be deleted" in summary
        assert page.locator("#retention-plan tr.table-danger").count() == len(DOOMED)
        assert page.get_by_role("button", name=f"Delete {len(DOOMED)} images").is_visible()
        assert "stage prod holds it" in page.locator(f"tr[data-digest='{scene.digest(10)}']").inner_text()
        screenshot(page, "image-retention-dry-run")
