"""A multi-architecture image as a person sees it, in Chromium, on real builds (amd64 natively, arm64 through
qemu-user-static on a remote builder over SSH): the manifest list's build page with each architecture's digest, size
and packages, what changed per architecture, and the retention dry run that keeps or deletes a list with its members.
Every task runs as it is sent (Celery eager, after each commit): the members' builds, the list's settling and its
assembly follow from the one Build request, as they do through workers. Screenshots land in test-artifacts/ to be looked
at."""

import pytest

from builds import services
from builds.models import ImageRetentionPolicy
from tests.browser import browser_page, follow, screenshot, settle, sign_in
from tests.builds.fixtures import BASE_IMAGE
from tests.builds.test_multiarch import PLATFORMS, build_list

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def containerfile(packages, version):
    status = "".join(f"Package: {name}\\nStatus: install ok installed\\nVersion: {v}\\n\\n" for name, v in packages.items())
    return (f"FROM {BASE_IMAGE}\n"
            f"RUN mkdir -p /var/lib/dpkg && printf '{status}' > /var/lib/dpkg/status && uname -m > /etc/built-on\n"
            f'LABEL containers.bootc=1 org.opencontainers.image.version="{version}"\n')


@pytest.fixture
def lists(personas, oci_registry, sshd, multiarch_store, build_settings, eager_tasks):
    from builds.models import Builder

    Builder.objects.create(name="amd-local", kind="local", architecture="amd64", capacity=2,
                           podman_root=multiarch_store.root, podman_runroot=multiarch_store.runroot)
    Builder.objects.create(name="arm-01", kind="ssh", architecture="arm64", host="127.0.0.1", port=sshd.port,
                           username="root", private_key=sshd.private_key, host_key=sshd.host_key,
                           podman_root=multiarch_store.root, podman_runroot=multiarch_store.runroot)
    definition = services.definition_create(team=personas.team, user=personas.developer, name="edge-os",
                                            platforms=PLATFORMS, description="Runs on Intel and Arm")
    built = []
    for version, packages in (("1.0", {"bash": "5.1-2", "curl": "7.88.1-10"}),
                              ("1.1", {"bash": "5.2.15-2", "curl": "7.88.1-10", "nginx": "1.22.1-9"})):
        revision = services.revision_create(definition=definition, user=personas.developer, message=f"version {version}",
                                            containerfile=containerfile(packages, version))
        built.append(build_list(revision, personas.developer))
    assert all(b.succeeded for b in built), [b.run.exit_reason for b in built]
    return definition, built


def test_the_manifest_list_page_what_changed_per_architecture_and_the_retention_dry_run(personas, portal_server, lists,
                                                                                       monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    definition, (old, new) = lists
    members = {m.architecture: m for m in new.members.all()}
    with browser_page() as page:
        sign_in(page, portal_server.url, "developer")
        page.goto(portal_server.url + new.get_absolute_url())
        settle(page)
        card = page.locator("#manifest-list")
        assert card.is_visible()
        text = card.inner_text()
        assert "2 architectures" in text and "linux/amd64" in text and "linux/arm64" in text
        assert text.count("3 dpkg") == 2  # each architecture's own package list
        for member in members.values():
            assert member.digest in card.inner_html()
        assert "What changed for arm64 since build" in text
        assert new.digest in page.locator("#build-facts").inner_html()
        screenshot(page, "multiarch-build-page")

        follow(page, page.get_by_role("link", name="What changed since #").first.click)
        rows = page.locator("#list-comparison tbody tr")
        assert rows.count() == 2
        assert "+1" in page.locator("#arch-arm64").inner_text()  # nginx added, on arm64 as on amd64
        screenshot(page, "multiarch-compare")

        page.goto(portal_server.url + members["arm64"].get_absolute_url())
        settle(page)
        assert f"manifest list build {new.number}" in page.locator("#manifest-list-member").inner_text()
        screenshot(page, "multiarch-member-arm64")

    ImageRetentionPolicy.objects.create(team=personas.team, definition=definition, keep_last=1, keep_days=0,
                                        keep_stage_history=0)
    with browser_page() as page:
        sign_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/images/{definition.pk}/retention/")
        settle(page)
        body = page.inner_text("body")
        assert old.digest[7:19] in page.content() and "which is kept" in body
        screenshot(page, "retention-dry-run-multiarch")
