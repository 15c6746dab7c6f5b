"""Multi-architecture images for real: amd64 natively on a local builder, arm64 on a remote builder over SSH whose RUN
steps run through qemu-user-static (binfmt_misc), each member pushed to docker-registry on loopback, the manifest list
assembled with `podman manifest`, pushed, promoted with `skopeo copy --multi-arch=all` and verified per architecture.

The builds run in the test process (`pipeline.build_execute`, what the `build_run` task calls), except the end-to-end
test, which lets every task run as it is sent (Celery eager, after commit) to prove the wiring from Build to stage.
"""

import json
import os
import subprocess

import pytest
from django.core.exceptions import ValidationError

from builds import multiarch, pipeline, retention, services
from builds.models import Build, Builder, BuildStatus, ImageRetentionPolicy
from hosts.models import ReferenceDigest
from portal.logsink import lines_after
from tests.builds.fixtures import BASE_IMAGE, PIPELINE_FACTS, copied_build_succeeds, skopeo_copy, skopeo_inspect

pytestmark = pytest.mark.slow

PLATFORMS = ["linux/amd64", "linux/arm64"]

# A RUN step that records the machine it ran on: x86_64 natively, aarch64 under qemu-user-static.
CONTAINERFILE = f"""FROM {BASE_IMAGE}
RUN uname -m > /etc/built-on && echo "built on $(uname -m)"
LABEL containers.bootc=1
"""
SECOND = CONTAINERFILE + "RUN echo 2 > /etc/release\n"


@pytest.fixture
def builders(db, sshd, multiarch_store):
    """amd64: the worker's own podman; arm64: a remote builder over SSH (this machine's sshd, emulating arm64)."""
    amd64 = Builder.objects.create(name="amd-local", kind="local", architecture="amd64", capacity=2,
                                   podman_root=multiarch_store.root, podman_runroot=multiarch_store.runroot)
    arm64 = Builder.objects.create(name="arm-01", kind="ssh", architecture="arm64", host="127.0.0.1", port=sshd.port,
                                   username="root", private_key=sshd.private_key, host_key=sshd.host_key,
                                   podman_root=multiarch_store.root, podman_runroot=multiarch_store.runroot)
    return {"amd64": amd64, "arm64": arm64}


@pytest.fixture
def definition(personas, oci_registry, builders, build_settings):
    """A repository of its own in the session's registry: a stage tag another test moved there (to the same digest, as
    `list_once` gives the same images) would otherwise keep that test's images here."""
    return services.definition_create(team=personas.team, user=personas.developer, name=f"edge-os-{os.urandom(3).hex()}",
                                      platforms=PLATFORMS,
                                      description="Runs on Intel and Arm")


def revision_of(definition, personas, text=CONTAINERFILE, message="two architectures"):
    return services.revision_create(definition=definition, user=personas.developer, containerfile=text,
                                    message=message)


def build_list(revision, user):
    """Start the manifest list, run each member, settle the list and assemble it: what the tasks do, in order."""
    [manifest_list] = services.build_start_all(revision=revision, user=user)
    for member in manifest_list.members.all():
        pipeline.build_execute(member.pk)
    multiarch.manifest_list_settle(manifest_list.pk)
    manifest_list.refresh_from_db()
    if manifest_list.run.status == "queued":
        pipeline.build_execute(manifest_list.pk)
    return Build.objects.with_related().get(pk=manifest_list.pk)


# What the pipeline records on a manifest list and on each member (tags and push time are each build's own).
LIST_FACTS = ("digest", "size", "labels", "os", "architecture")


@pytest.fixture(scope="session")
def built_lists():
    """{Containerfile text: (repository, list facts, {platform: member facts})} of the lists `list_once` had the
    pipeline build this session."""
    return {}


def list_once(lists, revision, user):
    """A succeeded manifest list of `revision`, for tests about a list once built (its pages, promotion, disk images,
    retention), not about building it. The first time the session builds a Containerfile, `build_list` builds it as the
    tasks would (both architectures, the assembly, its verification). A later list of the same text gets those images
    by digest under its own builds' tags (`skopeo copy`, the list with every architecture) and the facts the pipeline
    read: under a second instead of the 2-5 s of building both architectures and assembling them again. Either way each
    build (the members, then the list) announces what a worker's does, as `build_once`'s copies do: build.started,
    build.succeeded and, after commit, the pipeline's BUILD_SUCCEEDED."""
    first = lists.get(revision.containerfile)
    if first is None:
        built = build_list(revision, user)
        assert built.status == BuildStatus.SUCCEEDED, built.run.exit_reason
        lists[revision.containerfile] = (built.repository, {name: getattr(built, name) for name in LIST_FACTS}, {
            m.platform: {name: getattr(m, name) for name in PIPELINE_FACTS} for m in built.members.all()})
        return built
    source, list_facts, member_facts = first
    [manifest_list] = services.build_start_all(revision=revision, user=user)
    repository = manifest_list.repository or revision.definition.repository
    for build, facts in [*((m, member_facts[m.platform]) for m in manifest_list.members.with_related()),
                         (manifest_list, list_facts)]:
        tags = build.tag_names()
        for tag in tags:
            skopeo_copy(f"{source}@{facts['digest']}", f"{repository}:{tag}", all_architectures=True)
        copied_build_succeeds(build, repository=repository, tags=tags, facts=facts)
    return Build.objects.with_related().get(pk=manifest_list.pk)


def raw_manifest(reference):
    return json.loads(subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
                                     capture_output=True, text=True, check=True).stdout)


def log_text(build_or_run):
    return "\n".join(text for _, text in lines_after(getattr(build_or_run, "run", build_or_run)))


def built_on(store, build):
    """What the image's RUN step recorded as the machine it ran on (/etc/built-on, read by running the image)."""
    return store.run("run", "--rm", "--pull=never", "--platform", build.platform, f"{build.repository}:build-{build.number}",
                     "cat", "/etc/built-on", timeout=120).stdout.strip()


def test_each_platform_builds_on_a_builder_of_its_architecture_and_one_manifest_list_is_pushed(
        definition, personas, builders, multiarch_store):
    manifest_list = build_list(revision_of(definition, personas), personas.developer)

    assert manifest_list.status == BuildStatus.SUCCEEDED, manifest_list.run.exit_reason + "\n" + log_text(manifest_list)
    members = {m.architecture: m for m in manifest_list.members.with_related()}
    assert set(members) == {"amd64", "arm64"}
    assert members["amd64"].builder == builders["amd64"] and members["arm64"].builder == builders["arm64"]
    # A real arm64 image: the registry says arm64, and its RUN step ran on an aarch64 machine (qemu-user-static).
    assert skopeo_inspect(members["arm64"].image_ref)["Architecture"] == "arm64"
    assert built_on(multiarch_store, members["arm64"]) == "aarch64"
    assert built_on(multiarch_store, members["amd64"]) == "x86_64"
    assert "built on aarch64" in log_text(members["arm64"])
    # The list, pushed by digest: exactly each member's digest under its architecture.
    index = raw_manifest(manifest_list.image_ref)
    assert {entry["platform"]["architecture"]: entry["digest"] for entry in index["manifests"]} == {
        "amd64": members["amd64"].digest, "arm64": members["arm64"].digest}
    for tag in (f"build-{manifest_list.number}", f"rev-{manifest_list.revision.short_sha}"):
        assert skopeo_inspect(f"{manifest_list.repository}:{tag}")["Digest"] == manifest_list.digest
    assert manifest_list.size == members["amd64"].size + members["arm64"].size
    log = log_text(manifest_list)
    assert f"Verified linux/arm64: {members['arm64'].digest}" in log
    assert f"Pushed {manifest_list.repository}@{manifest_list.digest}" in log


def test_the_whole_list_is_promoted_verified_per_architecture_and_hosts_expect_their_own_architectures_digest(
        definition, personas, builders, built_lists, django_capture_on_commit_callbacks):
    from builds.releases import services as promotions
    from builds.releases.apply import promotion_apply_execute

    manifest_list = list_once(built_lists, revision_of(definition, personas), personas.developer)
    members = {m.architecture: m for m in manifest_list.members.all()}
    dev = personas.team.stages.get(name="dev")
    with pytest.raises(ValidationError, match="promote build"):
        promotions.promotion_request(definition=definition, build=members["arm64"], target_stage=dev,
                                     user=personas.developer, reason="only arm")
    promotion = promotions.promotion_request(definition=definition, build=manifest_list, target_stage=dev,
                                             user=personas.developer, reason="both architectures")
    promotion.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        promotion_apply_execute(promotion.run_id)
    promotion.refresh_from_db()
    assert promotion.status == "applied", promotion.status_note

    reference = dev.reference(definition)
    index = raw_manifest(reference)
    assert skopeo_inspect(reference)["Digest"] == manifest_list.digest
    assert {e["platform"]["architecture"]: e["digest"] for e in index["manifests"]} == {
        arch: m.digest for arch, m in members.items()}
    log = log_text(promotion.run)
    assert f"Verified arm64: {members['arm64'].digest}" in log and f"Verified amd64: {members['amd64'].digest}" in log
    # A host reports the digest of its own architecture's entry (bootc resolves the list): that is what it is held to.
    assert dict(ReferenceDigest.objects.filter(reference=reference).values_list("architecture", "digest")) == {
        "": manifest_list.digest, "amd64": members["amd64"].digest, "arm64": members["arm64"].digest}


def test_one_architecture_failing_fails_the_list_and_keeps_what_the_other_produced(definition, personas):
    failing_on_arm = (f"FROM {BASE_IMAGE}\n"
                      'RUN [ "$(uname -m)" = x86_64 ] || { echo "no arm64 build of this tool"; exit 3; }\n')
    manifest_list = build_list(revision_of(definition, personas, failing_on_arm), personas.developer)

    assert manifest_list.status == BuildStatus.FAILED
    members = {m.platform: m for m in manifest_list.members.with_related()}
    assert members["linux/arm64"].status == BuildStatus.FAILED
    assert members["linux/amd64"].status == BuildStatus.SUCCEEDED
    reason = manifest_list.run.exit_reason
    assert "linux/arm64" in reason and f"build {members['linux/arm64'].number}" in reason
    assert f"Kept what the others produced: linux/amd64 build {members['linux/amd64'].number}" in reason
    assert not manifest_list.digest
    # The amd64 image stays in the registry, with its digest on record.
    assert skopeo_inspect(members["linux/amd64"].image_ref)["Digest"] == members["linux/amd64"].digest


def test_a_platform_with_no_builder_of_its_architecture_is_refused_at_once_naming_it(definition, personas):
    services.definition_update(definition=definition, user=personas.developer,
                               platforms=["linux/amd64", "linux/s390x"])
    revision = revision_of(definition, personas)
    with pytest.raises(ValidationError, match="No enabled builder for s390x"):
        services.build_start_all(revision=revision, user=personas.developer)
    assert not Build.objects.filter(definition=definition).exists()


def test_cancelling_a_list_cancels_the_builds_of_its_architectures(definition, personas):
    from portal.services import run_request_cancel

    [manifest_list] = services.build_start_all(revision=revision_of(definition, personas), user=personas.developer)
    run_request_cancel(run=manifest_list.run, user=personas.developer)
    assert Build.objects.with_related().get(pk=manifest_list.pk).status == BuildStatus.CANCELLED
    assert [m.status for m in manifest_list.members.with_related()] == [BuildStatus.CANCELLED] * 2


def test_the_build_button_says_which_architecture_has_no_builder(definition, personas, client_for):
    from builds.models import ImageDefinition

    ImageDefinition.objects.filter(pk=definition.pk).update(platforms=["linux/amd64", "linux/ppc64le"])
    revision_of(definition, personas)
    page = client_for(personas.developer).post(f"/images/{definition.pk}/build/", follow=True)
    assert "No enabled builder for ppc64le" in page.content.decode()
    assert not Build.objects.filter(definition=definition).exists()


def test_the_build_page_shows_each_architecture_and_what_changed_per_architecture(definition, personas, client_for,
                                                                                built_lists):
    first = list_once(built_lists, revision_of(definition, personas), personas.developer)
    second = list_once(built_lists, revision_of(definition, personas, SECOND, "second"), personas.developer)
    assert second.status == BuildStatus.SUCCEEDED, second.run.exit_reason
    members = {m.architecture: m for m in second.members.all()}
    before = {m.architecture: m for m in first.members.all()}

    page = client_for(personas.developer).get(second.get_absolute_url())
    html = page.content.decode()
    assert page.status_code == 200
    for arch, member in members.items():
        assert f'id="member-{arch}"' in html and member.digest[:19] in html
        assert f"?a={before[arch].number}&amp;b={member.number}" in html  # that architecture's own comparison
    assert "Request promotion" in html

    response = client_for(personas.developer).get(
        f"/images/{definition.pk}/builds/compare/?a={first.number}&b={second.number}")
    compared = response.content.decode()
    assert response.status_code == 200, compared[-3000:]
    assert 'id="arch-amd64"' in compared and 'id="arch-arm64"' in compared
    assert f"?a={before['arm64'].number}&amp;b={members['arm64'].number}" in compared

    member_page = client_for(personas.developer).get(members["arm64"].get_absolute_url()).content.decode()
    assert f"manifest list build {second.number}" in member_page and "Request promotion" not in member_page

    # The approval card compares what the stage holds with the proposed list, architecture by architecture.
    from builds.releases import services as promotions
    from builds.releases.apply import promotion_apply_execute

    dev = personas.team.stages.get(name="dev")
    held = promotions.promotion_request(definition=definition, build=first, target_stage=dev, user=personas.developer,
                                        reason="first")
    held.refresh_from_db()
    promotion_apply_execute(held.run_id)
    proposed = promotions.promotion_request(definition=definition, build=second, target_stage=dev,
                                            user=personas.developer, reason="second")
    card = client_for(personas.approver).get(proposed.get_absolute_url()).content.decode()
    assert 'id="arch-arm64"' in card and f"?a={before['arm64'].number}&amp;b={members['arm64'].number}" in card


def test_the_list_build_page_four_ways(definition, personas, client, client_for, built_lists):
    manifest_list = list_once(built_lists, revision_of(definition, personas), personas.developer)
    url = manifest_list.get_absolute_url()
    assert client.get(url).status_code == 302  # anonymous: to the login page
    assert client_for(personas.outsider).get(url).status_code == 404
    viewer = client_for(personas.viewer).get(url)
    assert viewer.status_code == 200 and 'id="manifest-list"' in viewer.content.decode()
    assert "Request promotion" not in viewer.content.decode()
    developer = client_for(personas.developer).get(url).content.decode()
    assert "Request promotion" in developer and "Disk image for arm64" in developer


def test_a_disk_image_of_a_list_is_made_per_architecture(definition, personas, built_lists):
    from builds.diskimages.services import disk_image_request

    manifest_list = list_once(built_lists, revision_of(definition, personas), personas.developer)
    members = {m.architecture: m for m in manifest_list.members.all()}
    arm = disk_image_request(user=personas.developer, types=["qcow2"], build=manifest_list, architecture="arm64")
    assert (arm.digest, arm.architecture) == (members["arm64"].digest, "arm64")
    default = disk_image_request(user=personas.developer, types=["qcow2"], build=manifest_list)
    assert (default.digest, default.architecture) == (members["amd64"].digest, "amd64")
    with pytest.raises(ValidationError, match="has no s390x image"):
        disk_image_request(user=personas.developer, types=["qcow2"], build=manifest_list, architecture="s390x")


def test_retention_keeps_or_deletes_a_list_and_its_members_together(definition, personas, built_lists):
    old = list_once(built_lists, revision_of(definition, personas), personas.developer)
    new = list_once(built_lists, revision_of(definition, personas, SECOND), personas.developer)
    ImageRetentionPolicy.objects.create(team=personas.team, definition=definition, keep_last=1, keep_days=0,
                                        keep_stage_history=0)
    plan = retention.plan(definition, measure=False)
    doomed = set(plan.doomed_digests())
    assert doomed == {old.digest, *old.members.values_list("digest", flat=True)}
    kept = {v.digest: v.reasons for v in plan.kept}
    newest_member = new.members.order_by("-number").first()
    assert f"build {newest_member.number} is among the newest 1" in kept[newest_member.digest]
    assert any("image (build" in r and "is kept" in r for r in kept[new.digest])
    other = new.members.exclude(pk=newest_member.pk).get()
    assert any(f"manifest list build {new.number}, which is kept" in r for r in kept[other.digest])
