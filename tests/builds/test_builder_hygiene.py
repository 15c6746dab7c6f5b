"""Builder hygiene in a real podman store of the test's own: above its budget a builder loses its older build results,
oldest first and only until it fits, and keeps each definition's newest build with the layers under it, so the next
rebuild still comes from the cache; base images are never touched. The builders page shows the disk use."""

import tempfile

import pytest
from django.urls import reverse

from builds import hygiene, services
from builds.models import Build, Builder
from portal.models import AuditEvent, RunKind, RunStatus
from portal.services import run_create, run_finish, run_start
from tests.builds.fixtures import BASE_IMAGE, PodmanStore
from tests.helpers import require_tool

MIB = 1024 * 1024


@pytest.fixture
def store():
    require_tool("podman", "busybox", "runc")
    store = PodmanStore(tempfile.mkdtemp(prefix="portal-hygiene-"))
    store.import_busybox()
    yield store
    store.cleanup()


def containerfile(name, number):
    # Each build a layer of its own (2 MiB of random bytes) on a step the builds of a definition share.
    return (f"FROM {BASE_IMAGE}\nRUN echo {name} > /name\n"
            f"RUN echo {number} > /n && dd if=/dev/urandom of=/data bs=1M count=2 2>/dev/null\n")


class Images:
    """Builds made for real in the store (podman build --layers, as the pipeline runs it), recorded as the portal's
    build rows on `builder`."""

    def __init__(self, personas, store, builder, tmp_path):
        self.personas, self.store, self.builder, self.tmp_path = personas, store, builder, tmp_path
        self.definitions = {}

    def build(self, name, number, *, tags=None):
        if name not in self.definitions:
            definition = services.definition_create(team=self.personas.team, user=self.personas.developer, name=name)
            revision = services.revision_create(definition=definition, user=self.personas.developer,
                                                containerfile=containerfile(name, 0))
            self.definitions[name] = (definition, revision)
        definition, revision = self.definitions[name]
        context = self.tmp_path / f"{name}-{number}"
        context.mkdir()
        (context / "Containerfile").write_text(containerfile(name, number))
        tag = f"{definition.repository}:build-{number}"
        done = self.store.run("build", "--pull=never", "--layers", "-t", tag, str(context), timeout=120)
        image_id = self.store.run("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
        run = run_create(kind=RunKind.BUILD, title=f"Build {number}", team=self.personas.team)
        run_start(run)
        run_finish(run, status=RunStatus.SUCCEEDED)
        assert done.returncode == 0
        return Build.objects.create(definition=definition, revision=revision, number=number, run=run,
                                    builder=self.builder, image_id=image_id, repository=definition.repository)


@pytest.fixture
def images(personas, store, tmp_path):
    builder = Builder.objects.create(name="hygiene", kind="local", architecture="amd64", podman_root=store.root,
                                     podman_runroot=store.runroot)
    return Images(personas, store, builder, tmp_path)


@pytest.mark.django_db
def test_over_its_budget_a_builder_drops_older_builds_oldest_first_until_it_fits_and_keeps_the_cache(images):
    web = [images.build("web-os", n) for n in (1, 2, 3, 4)]
    edge = images.build("edge-os", 1)
    builder = hygiene.builder_prune(builder=images.builder)
    assert "no budget: nothing to prune" in builder.storage_note
    full = builder.storage_used_bytes
    assert full > 10 * MIB

    def present():
        return {b.number: images.store.image_exists(b.image_id) for b in web}

    builder.storage_budget_bytes = full - 1  # the oldest build alone is enough
    builder.save()
    builder = hygiene.builder_prune(builder=builder)
    assert present() == {1: False, 2: True, 3: True, 4: True}, builder.storage_note
    assert builder.storage_note.startswith("Pruned ") and "1 older build result(s) removed" in builder.storage_note

    builder.storage_budget_bytes = builder.storage_used_bytes - 1  # the next oldest goes, and no more
    builder.save()
    builder = hygiene.builder_prune(builder=builder)
    assert present() == {1: False, 2: False, 3: True, 4: True}, builder.storage_note
    assert images.store.image_exists(edge.image_id) and images.store.image_exists(BASE_IMAGE)
    assert builder.storage_used_bytes <= builder.storage_budget_bytes < full
    assert builder.storage_pruned_at is not None
    pruned = AuditEvent.objects.filter(action="builder.prune").order_by("seq")
    assert [event.detail["builds"] for event in pruned] == [[web[0].pk], [web[1].pk]]
    # The newest build's layers are still the cache: building its Containerfile again does no work.
    again = images.store.run("build", "--pull=never", "--layers", str(images.tmp_path / "web-os-4"), timeout=120)
    assert (again.stdout + again.stderr).count("Using cache") == 2  # both RUN steps


@pytest.mark.django_db
def test_a_budget_too_small_for_the_newest_builds_says_so_and_keeps_them(images):
    web = [images.build("web-os", n) for n in (1, 2)]
    images.builder.storage_budget_bytes = 1
    images.builder.save()

    builder = hygiene.builder_prune(builder=images.builder)

    assert not images.store.image_exists(web[0].image_id) and images.store.image_exists(web[1].image_id)
    assert images.store.image_exists(BASE_IMAGE)
    assert "Still over the budget" in builder.storage_note


@pytest.mark.django_db
def test_an_unreachable_store_is_recorded_not_raised(personas):
    builder = Builder.objects.create(name="gone", kind="ssh", host="127.0.0.1", port=9, username="root",
                                     host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
                                     storage_budget_bytes=MIB)
    builder = hygiene.builder_prune(builder=builder)
    assert builder.storage_note.startswith("Could not measure the store") and builder.storage_used_bytes is None


@pytest.mark.django_db
class TestAccess:
    def test_pruning_from_the_builders_page(self, client_for, personas, images):
        url = reverse("builds:builder_prune", args=[images.builder.pk])
        assert client_for(None).post(url).status_code == 302
        for who in ("outsider", "viewer", "admin", "helpdesk"):
            assert client_for(getattr(personas, who)).post(url).status_code == 403, who
        assert client_for(personas.superuser).get(url).status_code == 405
        assert Builder.objects.get(pk=images.builder.pk).storage_checked_at is None
        assert client_for(personas.superuser).post(url).status_code == 302
        assert Builder.objects.get(pk=images.builder.pk).storage_used_bytes > 0

    def test_the_builders_page_shows_the_disk_use(self, client_for, personas, images):
        Builder.objects.filter(pk=images.builder.pk).update(storage_used_bytes=3 * 1024 ** 3,
                                                            storage_budget_bytes=2 * 1024 ** 3,
                                                            storage_note="Pruned 1.0 GB")
        page = client_for(personas.developer).get(reverse("builds:builder_list")).content.decode()
        assert "3.0\xa0GB" in page and "of 2.0\xa0GB" in page and "Pruned 1.0 GB" in page
        assert "builder_prune" not in page and "/prune/" not in page
        assert "/prune/" in client_for(personas.superuser).get(reverse("builds:builder_list")).content.decode()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_builders_page_in_a_browser(personas, images, portal_server, monkeypatch):
    from tests.browser import browser_page, log_in, screenshot, settle

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    for number in (1, 2, 3):
        images.build("web-os", number)
    images.builder.storage_budget_bytes = 1
    images.builder.save()
    hygiene.builder_prune(builder=images.builder)
    with browser_page() as page:
        log_in(page, portal_server.url, personas.superuser.username)
        page.goto(portal_server.url + reverse("builds:builder_list"))
        settle(page)
        disk = page.locator(f"#builder-{images.builder.pk}-disk").inner_text()
        assert "of 1\xa0byte" in disk and "Still over the budget" in disk
        assert page.get_by_role("button", name="Prune").first.is_visible()
        screenshot(page, "builders-disk-use")
