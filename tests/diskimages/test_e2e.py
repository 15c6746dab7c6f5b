"""End to end: a real build (podman, busybox base, docker-registry; built once per session, each test's build gets that
image by digest in its own repository), then a conversion through the portal's own path with the stand-in
bootc-image-builder image: podman pull into the builder's storage, podman run with bib's mounts and arguments, the log
in sections, format checks with qemu-img and xorriso, sha256, Django storage, download.

The pipeline (`builds.diskimages.pipeline.disk_image_execute`) is what the `disk_image_run` task calls; it runs in-process
here so each test can look at the rows it wrote.
"""

import hashlib
import json
import os
import subprocess
import time

import pytest

from builds import integrations, pipeline, services
from builds.diskimages import pipeline as diskimage_pipeline
from builds.diskimages import services as diskimages
from builds.diskimages import services_presets as presets
from builds.diskimages.models import Artifact, DiskImage
from builds.models import Build, Builder
from portal.logsink import lines_after
from portal.models import LogSection, RunStatus
from portal.services import run_request_cancel
from tests.builds.fixtures import BASE_IMAGE, build_once
from tests.diskimages.fixtures import ISO_VOLUME_ID
from tests.helpers import ProcessWatcher, start_in_thread

pytestmark = pytest.mark.slow

CONTAINERFILE = f"FROM {BASE_IMAGE}\nRUN echo os > /etc/os-name\nLABEL containers.bootc=1\n"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop"
CONFIG = {"customizations": {"user": [{"name": "ops", "key": KEY, "groups": ["wheel"]}],
                             "kernel": {"append": "console=ttyS0"}}}


@pytest.fixture
def built(personas, oci_registry, local_builder, build_settings, diskimage_settings, pipeline_images):
    """A succeeded build of a bootc-labelled busybox image, pushed to the loopback registry by the portal's pipeline
    (once per session: `build_once`)."""
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    revision = services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE)
    return build_once(pipeline_images, revision, personas.developer)


def convert(**kwargs):
    disk_image = diskimages.disk_image_request(**kwargs)
    assert diskimage_pipeline.disk_image_execute(disk_image.pk) is None
    return DiskImage.objects.with_related().get(pk=disk_image.pk)


def log_text(disk_image):
    return "\n".join(text for _, text in lines_after(disk_image.run))


def stored_sha256(artifact):
    with artifact.file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_qcow2_raw_vmdk_and_the_installer_iso_come_out_checked_stored_and_downloadable(built, personas, client_for):
    disk_image = convert(user=personas.developer, build=built, types=["qcow2", "raw", "vmdk", "anaconda-iso"],
                         config={"customizations": {"user": [{"name": "ops", "key": KEY, "groups": ["wheel"]}]}})
    log = log_text(disk_image)
    assert disk_image.run.status == RunStatus.SUCCEEDED, disk_image.run.exit_reason + "\n" + log

    artifacts = {a.image_type: a for a in disk_image.artifacts.all()}
    assert sorted(artifacts) == ["anaconda-iso", "qcow2", "raw", "vmdk"]
    for artifact in artifacts.values():
        assert artifact.present
        assert artifact.size == artifact.file.size > 0
        assert artifact.sha256 == stored_sha256(artifact)
        assert artifact.filename.startswith(f"web-os-build-{built.number}-amd64")
        assert f"Stored {artifact.filename}: sha256 {artifact.sha256}" in log
    assert artifacts["qcow2"].format == "qcow2" and artifacts["qcow2"].details["virtual_size"] == 10 * 1024**3
    assert artifacts["raw"].format == "raw" and artifacts["raw"].details["partition_table"] == "gpt"
    assert artifacts["vmdk"].format == "vmdk"
    assert artifacts["anaconda-iso"].format == "iso9660"
    assert artifacts["anaconda-iso"].details["volume_id"] == ISO_VOLUME_ID
    assert artifacts["anaconda-iso"].details["el_torito"] == ["BIOS"]
    # The stored file is what qemu-img says it is, read back from Django's storage.
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", artifacts["qcow2"].file.path],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2"

    # ISO and disk types cannot share a bib run: two invocations, each with the documented mounts and flags.
    assert len(disk_image.commands) == 2
    disk_run, iso_run = disk_image.commands
    assert disk_run[disk_run.index("--type") + 1:].count("--type") == 2  # qcow2, raw, vmdk in one run
    assert [disk_run[i + 1] for i, a in enumerate(disk_run) if a == "--type"] == ["qcow2", "raw", "vmdk"]
    assert [iso_run[i + 1] for i, a in enumerate(iso_run) if a == "--type"] == ["anaconda-iso"]
    for argv in disk_image.commands:
        assert "--privileged" in argv and "--rm" in argv
        assert any(a.endswith(":/var/lib/containers/storage") for a in argv)
        assert any(a.endswith(":/config.toml:ro") for a in argv) and any(a.endswith(":/output") for a in argv)
        assert argv[-1] == f"{built.repository}@{built.digest}"
        assert ["--rootfs", "xfs"] == argv[argv.index("--rootfs"):argv.index("--rootfs") + 2]
        assert ["--target-arch", "x86_64", "--progress", "verbose"] == argv[argv.index("--target-arch"):
                                                                            argv.index("--target-arch") + 4]

    # The configuration the builder read is the rendered preset, byte for byte.
    from builds.diskimages.diskconfig import render_toml

    expected = hashlib.sha256(render_toml(disk_image.config).encode()).hexdigest()
    assert f"config: /config.toml sha256:{expected}" in log
    # The log streams in sections: the portal's groups, bib's steps and osbuild's pipelines.
    titles = list(LogSection.objects.filter(run=disk_image.run).values_list("kind", "title"))
    assert ("group", f"Getting {built.repository}@{built.digest} into the builder's container storage") in titles
    assert ("group", "bootc-image-builder: qcow2, raw, vmdk") in titles
    assert ("group", "bootc-image-builder: anaconda-iso") in titles
    assert ("bib", "Manifest generation step") in titles and ("bib", "Image building step") in titles
    assert ("pipeline", "Pipeline qcow2") in titles

    # Download: the whole file, with its checksum, and a resumed range.
    client = client_for(personas.viewer)
    qcow2 = artifacts["qcow2"]
    response = client.get(qcow2.get_absolute_url())
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == qcow2.sha256 and len(body) == qcow2.size
    assert response["Accept-Ranges"] == "bytes" and response["ETag"] == f'"{qcow2.sha256}"'
    response = client.get(qcow2.get_absolute_url(), HTTP_RANGE="bytes=1000-")
    assert response.status_code == 206
    assert b"".join(response.streaming_content) == body[1000:]


def test_vhd_gce_and_ami_without_upload(built, personas):
    disk_image = convert(user=personas.developer, build=built, types=["ami", "vhd", "gce", "raw"], rootfs="ext4",
                         config=CONFIG)
    assert disk_image.run.status == RunStatus.SUCCEEDED, disk_image.run.exit_reason + "\n" + log_text(disk_image)
    artifacts = {a.image_type: a for a in disk_image.artifacts.all()}
    assert artifacts["vhd"].format == "vpc"
    assert artifacts["gce"].format == "gce-tarball" and artifacts["gce"].details["members"] == ["disk.raw"]
    assert artifacts["ami"].format == "raw" and artifacts["ami"].filename.endswith("-ami.raw")
    # raw and ami both write image/disk.raw, so they run separately.
    assert [[a[i + 1] for i, x in enumerate(a) if x == "--type"] for a in disk_image.commands] == \
        [["raw", "vhd", "gce"], ["ami"]]
    assert all(["--rootfs", "ext4"] == a[a.index("--rootfs"):a.index("--rootfs") + 2] for a in disk_image.commands)


def test_an_ami_upload_gets_its_aws_keys_and_the_registry_login_from_stored_secrets_never_on_a_command_line(
        personas, auth_registry, local_builder, build_settings, diskimage_settings, oci_registry):
    integrations.registry_credential_save(team=personas.team, user=personas.admin, registry=auth_registry.address,
                                      username=auth_registry.user, password=auth_registry.password, insecure=True)
    definition = services.definition_create(team=personas.team, user=personas.developer, name="private-os",
                                            repository=f"{auth_registry.address}/platform/private-os")
    revision = services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE)
    build = services.build_start(revision=revision, user=personas.developer)
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.succeeded, build.run.exit_reason
    # Make the conversion pull the image: drop it from the builder's storage.
    subprocess.run(["podman", "--root", local_builder.podman_root, "--runroot", local_builder.podman_runroot, "rmi",
                    "--force", build.image_id], check=True, capture_output=True)
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    credential = presets.cloud_credential_save(team=personas.team, user=personas.admin, name="ec2",
                                                  access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key=secret)
    with ProcessWatcher() as watcher:
        disk_image = convert(user=personas.developer, build=build, types=["ami"], aws_bucket="images-bucket",
                             aws_region="eu-west-1", aws_ami_name="web-os build 1", aws_credential=credential)
    log = log_text(disk_image)
    assert disk_image.run.status == RunStatus.SUCCEEDED, disk_image.run.exit_reason + "\n" + log
    assert "Uploading image/disk.raw to s3://images-bucket in eu-west-1 (access key ...MPLE)" in log
    assert disk_image.artifacts.get().ami_id == "ami-0123456789abcdef0"
    assert "registry login: /run/containers/0/auth.json" in log
    argv = disk_image.commands[0]
    assert argv[argv.index("--aws-ami-name"):argv.index("--aws-ami-name") + 6] == [
        "--aws-ami-name", "web-os build 1", "--aws-bucket", "images-bucket", "--aws-region", "eu-west-1"]
    assert any(line.startswith("podman") and " pull " in line for line in watcher.seen), "the pull was not seen"
    for text in [log, json.dumps(disk_image.commands), *watcher.seen]:
        assert secret not in text
        assert auth_registry.password not in text


def test_a_digest_the_builder_does_not_have_fails_the_run_with_the_reason(built, personas):
    missing = "sha256:" + "0" * 64
    Build.objects.filter(pk=built.pk).update(digest=missing)
    built.refresh_from_db()
    disk_image = convert(user=personas.developer, build=built, types=["qcow2"])
    assert disk_image.run.status == RunStatus.FAILED
    assert disk_image.failure_cause == "image_not_found"
    assert disk_image.run.exit_reason.startswith(
        f"Image not found in storage: the builder does not have {built.repository}@{missing} and could not pull it")
    assert not disk_image.artifacts.exists()


@pytest.fixture
def tiny_work_dir(tmp_path):
    """A 2 MiB tmpfs: the stand-in's copy of a 4 MiB raw disk runs out of space, as a real full disk does."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (as CI runs)")
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], check=True)
    yield str(path)
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_named_as_the_cause(built, personas, local_builder, tiny_work_dir):
    Builder.objects.filter(pk=local_builder.pk).update(work_dir=tiny_work_dir)
    disk_image = convert(user=personas.developer, build=built, types=["raw"])
    assert disk_image.run.status == RunStatus.FAILED, log_text(disk_image)
    assert disk_image.failure_cause == "disk_full"
    assert disk_image.run.exit_reason.startswith("Disk full: ")
    assert "No space left on device" in disk_image.run.exit_reason
    assert "ran out of space" in disk_image.hint  # the failure knowledge base's disk-full cause
    assert os.listdir(tiny_work_dir) == []  # the work directory was cleaned up


def test_a_cancelled_conversion_stops_its_builder_container(transactional_db, in_process_worker, built, personas,
                                                            local_builder, podman_store):
    config = {"customizations": {"kernel": {"append": "standin.sleep=60"}}}
    disk_image = diskimages.disk_image_request(user=personas.developer, build=built, types=["qcow2"], config=config)
    worker = start_in_thread(diskimage_pipeline.disk_image_execute, disk_image.pk)
    deadline = time.monotonic() + 30
    while "stand-in: sleeping" not in log_text(disk_image) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "stand-in: sleeping 60 s" in log_text(disk_image)
    started = time.monotonic()
    run_request_cancel(run=disk_image.run, user=personas.developer)
    worker.join(30)
    assert time.monotonic() - started < 10
    disk_image = DiskImage.objects.with_related().get(pk=disk_image.pk)
    assert disk_image.run.status == RunStatus.CANCELLED, disk_image.run.exit_reason
    assert "Cancelled by developer" in disk_image.run.exit_reason
    containers = podman_store.run("ps", "--all", "--format", "{{.Names}}").stdout.split()
    assert f"imp-diskimage-{disk_image.pk}-0" not in containers
    assert not Artifact.objects.filter(disk_image=disk_image).exists()


def test_a_conversion_runs_on_a_remote_builder_over_ssh(built, personas, local_builder, sshd, podman_store):
    Builder.objects.filter(pk=local_builder.pk).update(enabled=False)
    remote = Builder.objects.create(name="remote-1", kind="ssh", architecture=local_builder.architecture,
                                    host="127.0.0.1", port=sshd.port, username="root", private_key=sshd.private_key,
                                    host_key=sshd.host_key, podman_root=podman_store.root,
                                    podman_runroot=podman_store.runroot)
    disk_image = convert(user=personas.developer, build=built, types=["qcow2"])
    assert disk_image.builder == remote
    assert disk_image.run.status == RunStatus.SUCCEEDED, disk_image.run.exit_reason + "\n" + log_text(disk_image)
    artifact = disk_image.artifacts.get()
    assert artifact.format == "qcow2" and artifact.sha256 == stored_sha256(artifact)
    assert "builder remote-1 (ssh)" in log_text(disk_image)


def test_osbuilds_image_builder_backend_builds_one_type_per_run(built, personas, diskimage_settings):
    diskimage_settings.DISK_IMAGE_BACKEND = "image-builder"
    diskimage_settings.DISK_IMAGE_IMAGE_BUILDER_IMAGE = diskimage_settings.DISK_IMAGE_BUILDER_IMAGES[0]
    disk_image = convert(user=personas.developer, build=built, types=["qcow2", "bootc-installer"], config=CONFIG | {
        "customizations": {"user": CONFIG["customizations"]["user"]}})
    assert disk_image.backend == "image-builder"
    assert disk_image.run.status == RunStatus.SUCCEEDED, disk_image.run.exit_reason + "\n" + log_text(disk_image)
    assert [argv[-1] for argv in disk_image.commands] == ["qcow2", "bootc-installer"]
    for argv in disk_image.commands:
        assert argv[argv.index("--bootc-ref") + 1] == f"{built.repository}@{built.digest}"
        assert any(a.endswith(":/blueprint.toml:ro") for a in argv)
    artifacts = {a.image_type: a for a in disk_image.artifacts.all()}
    assert artifacts["qcow2"].format == "qcow2" and artifacts["bootc-installer"].format == "iso9660"
    assert "image-builder stand-in: wrote /output/bootc-qcow2-x86_64/disk.qcow2" in log_text(disk_image)
