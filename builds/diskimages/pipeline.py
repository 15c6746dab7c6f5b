"""What a worker does with one conversion: get the digest into the builder's container storage, run
bootc-image-builder (or image-builder) through podman, check each output's format, and store it as an artifact.

`disk_image_execute(pk)` is the whole of the `builds.diskimages.tasks.disk_image_run` task (queue `images`). It starts
the run with a conditional UPDATE (a redelivered task does nothing), streams every command into the run's log in
sections, and always ends the run: succeeded, failed with the cause (disk full, architecture mismatch, image not in
storage, missing privileges, a configuration key refused, ...), or cancelled, never leaving it running or a half-stored
file behind.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import re
import time

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile

from builds import fetches, podman, registry
from builds.models import Builder
from builds.runner import BuilderUnavailable, CommandFailed, Watch, runner_for
from portal import egress, objectstore, runs
from portal.models import RunStatus
from portal.services import run_set_phase

from . import converters, diskconfig
from .models import Artifact, DiskImage, DiskImageBackend, artifact_storage

log = logging.getLogger(__name__)

COPY_CHUNK = 1024 * 1024
HEAD_BYTES = 36 * 1024
AMI_ID_RE = re.compile(r"\bami-[0-9a-f]{8,17}\b")


class Failed(runs.Failed):
    """The conversion failed for a known cause; the message is the run's exit reason."""

    def __init__(self, reason, *, cause=converters.Cause.OTHER, hint="", summary=""):
        super().__init__(reason)
        self.cause, self.hint, self.summary = cause, hint, summary


class TailSink:
    """The run's LogSink, also remembering the last lines (to name the cause when the builder fails)."""

    def __init__(self, sink, keep=400):
        self.sink = sink
        self.lines = collections.deque(maxlen=keep)

    def write(self, text):
        self.lines.extend(text.split("\n"))
        self.sink.write(text)

    def poll(self):
        self.sink.poll()


class HashingReader:
    """A file object for Django's storage API that hashes what is read and keeps the run alive while it copies."""

    def __init__(self, raw, watch):
        self.raw, self.watch = raw, watch
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._last_poll = time.monotonic()

    def read(self, n=-1):
        data = self.raw.read(COPY_CHUNK if n is None or n < 0 else n)
        self.sha256.update(data)
        self.size += len(data)
        now = time.monotonic()
        if now - self._last_poll > 0.5:
            self._last_poll = now
            self.watch.poll()
        return data

    closed = False

    def readable(self):
        return True

    def seekable(self):
        return False  # read once, from the start: boto3 then uploads it part by part as it is read

    def seek(self, offset, whence=0):
        if offset != 0 or whence != 0 or self.size:
            raise OSError("HashingReader can only be read once, from the start")
        return 0


class MovableFile(File):
    """A local file FileSystemStorage may move into place (its fast path for temporary uploads) instead of copying."""

    def temporary_file_path(self):
        return self.file.name


def disk_image_execute(disk_image_id: int) -> None:
    """Run one conversion. Its builder's capacity is the concurrency of the workers that consume its queue
    (`builds.queues`): a worker process that takes the task runs it now."""
    disk_image = DiskImage.objects.with_related().filter(pk=disk_image_id).first()
    if disk_image is None or disk_image.run.status != RunStatus.QUEUED:
        return
    run = disk_image.run
    builder = Builder.objects.filter(pk=disk_image.builder_id).first()
    if not runs.claim(run, phase="preparing"):
        return
    limit = runs.Limit(settings.DISK_IMAGE_TIMEOUT_MINUTES * 60, "DISK_IMAGE_TIMEOUT_MINUTES")
    with runs.executing(run, what="the conversion", limit=limit, stopped="the builder container was stopped",
                        unavailable=f"Builder {builder.name if builder else '(none)'} is unavailable",
                        before_finish=lambda execution: _record_failure(disk_image, execution)) as execution:
        _convert(disk_image, builder, execution.sink, limit)


def _convert(disk_image, builder, sink, limit):
    if builder is None or not builder.enabled:
        raise BuilderUnavailable("its builder was removed or disabled; retry to pick another one")
    tail = TailSink(sink)
    watch = Watch(run=disk_image.run, sink=tail, deadline=time.monotonic() + limit.seconds)
    containers: list[str] = []
    with runner_for(builder) as runner:
        workdir = runner.mkdtemp()
        try:
            try:
                Conversion(disk_image, builder, runner, workdir, watch, tail, containers).run()
            except CommandFailed as exc:
                failure = converters.classify_failure(exc.output_tail, facts=diskconfig.failure_facts(disk_image.config))
                raise Failed(f"{failure.label}: {failure.summary or exc}", cause=failure.cause, hint=failure.hint,
                             summary="\n".join(failure.lines)) from exc
        except BaseException:
            for name in containers:  # a builder container still running is stopped and removed
                with contextlib.suppress(Exception):
                    runner.run(converters.remove_container_args(builder, name),
                               watch=Watch(run=None, sink=None, deadline=None), echo=False)
            raise
        finally:
            runner.remove_tree(workdir)


def _record_failure(disk_image, execution):
    """What the disk image's page shows of a failure: its cause, summary and hint."""
    if execution.succeeded:
        return
    error = execution.error
    cause = hint = summary = ""
    if isinstance(error, Failed):
        cause, hint, summary = error.cause, error.hint, error.summary
    elif isinstance(error, BuilderUnavailable):
        hint = "Check the builder on the builders page, or disable it so conversions go to another one."
    failed = execution.status == RunStatus.FAILED
    DiskImage.objects.filter(pk=disk_image.pk).update(failure_cause=(cause or converters.Cause.OTHER) if failed else "",
                                                      failure_summary=summary, hint=hint[:500])


def _fact(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,} bytes"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


class Conversion:
    """The steps of one conversion on one builder, with the run's log."""

    def __init__(self, disk_image, builder, runner, workdir, watch, tail, containers):
        self.di, self.builder, self.runner, self.workdir = disk_image, builder, runner, workdir
        self.watch, self.tail, self.containers = watch, tail, containers
        self.run_row = disk_image.run
        self.ref = disk_image.source_ref
        self.storage_path = builder.podman_root or converters.DEFAULT_STORAGE

    def log(self, line):
        self.tail.write(line)

    def group(self, title):
        self.log(f"::group::{title}")

    def endgroup(self):
        self.log("::endgroup::")

    def run(self):
        di = self.di
        source = f"build {di.build.number}" if di.build else "digest"
        self.log(f"Disk image #{di.pk}: {', '.join(di.types)} of {di.definition} {source} ({self.ref}) for "
                 f"{di.architecture}, root file system {di.rootfs}, on builder {self.builder.name} "
                 f"({self.builder.kind}) with {di.builder_image}")
        refusal = fetches.repository_refusal(di.repository, di.team, write=False)
        if refusal:
            raise Failed(refusal, cause=converters.Cause.CONFIG)
        if "ami" in di.types and di.aws_bucket:
            for endpoint in converters.aws_endpoints(di.aws_region):
                try:
                    egress.check(endpoint, 443, what=f"The AMI upload endpoint {endpoint}")
                except egress.EgressRefused as exc:
                    raise Failed(str(exc), cause=converters.Cause.CONFIG) from None
        access = registry.access_for(di.team, di.repository.split("/", 1)[0])
        authfile = None
        if access.auth_json():
            authfile = f"{self.workdir}/auth.json"
            self.runner.write_file(authfile, access.auth_json(), 0o600)
        self.ensure_image(access, authfile)

        config_path = f"{self.workdir}/config.toml"
        self.runner.write_file(config_path, diskconfig.render_toml(di.config).encode(), 0o600)
        env_file = aws = None
        if "ami" in di.types and di.aws_bucket:
            credential = di.aws_credential
            if credential is None:
                raise Failed("The AWS credentials of this request were deleted: add them again and retry.",
                             cause=converters.Cause.CONFIG)
            env_file = f"{self.workdir}/aws.env"
            self.runner.write_file(env_file, converters.aws_env(credential.access_key_id, credential.secret_access_key,
                                                                credential.session_token), 0o600)
            aws = converters.AwsUpload(bucket=di.aws_bucket, region=di.aws_region, ami_name=di.aws_ami_name)

        commands = []
        for number, types in enumerate(converters.plan(di.types, di.backend)):
            output_dir = f"{self.workdir}/output-{number}"
            self.runner.mkdir(output_dir)
            name = f"imp-diskimage-{di.pk}-{number}"
            argv = self.argv(types=types, name=name, output_dir=output_dir, config_path=config_path,
                             authfile=authfile, env_file=env_file, aws=aws if "ami" in types else None)
            commands.append(argv)
            DiskImage.objects.filter(pk=di.pk).update(commands=commands)
            what = dict(DiskImageBackend.choices).get(di.backend, di.backend)
            self.group(f"{what}: {', '.join(types)}")
            run_set_phase(self.run_row, f"converting: {', '.join(types)}")
            self.containers.append(name)
            first_line = len(self.tail.lines)
            try:
                self.runner.run(argv, watch=self.watch, tail=300)
            except CommandFailed as exc:
                failure = converters.classify_failure(exc.output_tail, builder_image=di.builder_image,
                                                      facts=diskconfig.failure_facts(di.config))
                raise Failed(f"{failure.label}: {failure.summary or exc}", cause=failure.cause, hint=failure.hint,
                             summary="\n".join(failure.lines)) from None
            self.containers.remove(name)
            output = list(self.tail.lines)[first_line:]
            self.endgroup()
            self.group(f"Checking and storing {', '.join(types)}")
            run_set_phase(self.run_row, f"storing: {', '.join(types)}")
            for image_type in types:
                self.collect(image_type, output_dir, output)
            self.endgroup()
        stored = self.di.artifacts.filter(deleted_at__isnull=True)
        self.log(f"Done: {stored.count()} file(s), {sum(a.size for a in stored):,} bytes.")

    def argv(self, *, types, name, output_dir, config_path, authfile, env_file, aws):
        di = self.di
        pull = settings.DISK_IMAGE_BUILDER_PULL
        if di.backend == DiskImageBackend.IMAGE_BUILDER:
            return converters.image_builder_args(
                builder=self.builder, image=di.builder_image, name=name, ref=self.ref, image_type=types[0],
                rootfs=di.rootfs, arch=di.architecture, config_path=config_path, output_dir=output_dir,
                storage=self.storage_path, pull=pull, authfile=authfile, env_file=env_file, aws=aws)
        return converters.bib_args(
            builder=self.builder, image=di.builder_image, name=name, ref=self.ref, types=types, rootfs=di.rootfs,
            arch=di.architecture, config_path=config_path, output_dir=output_dir, storage=self.storage_path, pull=pull,
            authfile=authfile, env_file=env_file, aws=aws)

    def ensure_image(self, access, authfile):
        """bootc-image-builder reads the image only from the container storage: pull the digest there if missing."""
        self.group(f"Getting {self.ref} into the builder's container storage")
        run_set_phase(self.run_row, "pulling")
        quiet = Watch(run=None, sink=None, deadline=self.watch.deadline)
        try:
            self.runner.run(podman.image_exists_args(self.builder, self.ref), watch=quiet, echo=False)
            self.log(f"{self.ref} is already in {self.storage_path}")
        except CommandFailed:
            try:
                self.runner.run(converters.pull_args(self.builder, self.ref, tls_verify=access.tls_verify,
                                                     authfile=authfile), watch=self.watch)
            except CommandFailed as exc:
                last = next((line for line in reversed(exc.output_tail) if line.strip()), str(exc))
                raise Failed(f"Image not found in storage: the builder does not have {self.ref} and could not pull it "
                             f"({last.strip()[:300]})", cause=converters.Cause.IMAGE_NOT_FOUND,
                             hint=converters.FAILURE_PATTERNS[-1][2], summary="\n".join(exc.output_tail[-8:])) \
                    from None
        self.endgroup()

    # --- Artifacts ---

    def output_path(self, image_type, output_dir):
        if self.di.backend != DiskImageBackend.IMAGE_BUILDER:
            return f"{output_dir}/{converters.OUTPUT_PATHS[image_type]}"
        suffix = converters.IMAGE_BUILDER_SUFFIXES[image_type]
        found = self.runner.run(["find", output_dir, "-type", "f", "-name", f"*{suffix}"], watch=self.watch,
                                capture=True, echo=False).stdout.split()
        if not found:
            raise Failed(f"Unexpected output: image-builder finished but wrote no *{suffix} file",
                         cause=converters.Cause.FORMAT)
        return sorted(found)[0]

    def collect(self, image_type, output_dir, output):
        path = self.output_path(image_type, output_dir)
        relative = os.path.relpath(path, output_dir)
        try:
            size = int(self.runner.run(["stat", "-c", "%s", path], watch=self.watch, capture=True,
                                       echo=False).stdout.strip())
        except (CommandFailed, ValueError):
            raise Failed(f"Unexpected output: the builder finished but wrote no {relative} for {image_type}",
                         cause=converters.Cause.FORMAT) from None
        details = self.check_format(image_type, path)
        ami_id = ""
        if image_type == "ami" and self.di.aws_bucket:
            found = [m.group(0) for line in output for m in [AMI_ID_RE.search(line)] if m]
            ami_id = found[-1] if found else ""
        self.store(image_type, path, relative, size, details, ami_id)

    def check_format(self, image_type, path):
        quiet = self.watch
        try:
            if image_type in converters.QEMU_IMG_TYPES:
                result = self.runner.run(converters.qemu_img_info_args(path), watch=quiet, capture=True)
                return converters.check_qemu_img(image_type, result.stdout)
            if image_type == "gce":
                result = self.runner.run(converters.tar_list_args(path), watch=quiet, capture=True)
                return converters.check_gce(result.stdout)
            result = self.runner.run(converters.xorriso_args(path), watch=quiet, capture=True)
            return converters.check_iso(result.stdout + "\n" + "\n".join(result.lines))
        except converters.FormatMismatch as exc:
            raise Failed(f"Unexpected output: {exc}", cause=converters.Cause.FORMAT) from None
        except CommandFailed as exc:
            raise Failed(f"Unexpected output: the format check of {os.path.basename(path)} failed ({exc}: "
                         f"{' '.join(exc.output_tail[-2:])})", cause=converters.Cause.FORMAT) from None
        except BuilderUnavailable as exc:
            raise Failed(f"The builder cannot check the {image_type} output: {exc} (install qemu-utils and xorriso "
                         "there)") from None

    def download_name(self, image_type):
        di = self.di
        label = f"build-{di.build.number}" if di.build else di.short_digest
        extension = converters.DOWNLOAD_EXTENSIONS[image_type]
        return f"{di.definition.name}-{label}-{di.architecture}{'-ami' if image_type == 'ami' else ''}.{extension}"

    @staticmethod
    def _remove_partial(storage, name, saved, checksum, artifact):
        """Nothing half-stored stays behind: no object without its row (a multipart upload that failed was already
        aborted by boto3), and no row, since it is saved last."""
        if artifact.pk is not None:
            return
        for stored in (checksum, saved):
            if stored is not None:
                with contextlib.suppress(Exception):
                    storage.delete(stored)
        if saved is None:
            with contextlib.suppress(Exception):
                if storage.exists(name):
                    storage.delete(name)

    def store(self, image_type, path, relative, size, details, ami_id):
        artifact = Artifact(disk_image=self.di, image_type=image_type, filename=self.download_name(image_type),
                            size=size, sha256="", format=details.get("format", ""), details=details, ami_id=ami_id)
        storage = artifact_storage()
        name = f"disk-images/{self.di.pk}/{artifact.key}/{artifact.filename}"
        self.log(f"Storing {relative} ({size:,} bytes) as {artifact.filename}")
        saved = checksum = None
        try:
            if objectstore.is_filesystem(storage) and not hasattr(self.runner, "sftp"):
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    last = time.monotonic()
                    while chunk := f.read(COPY_CHUNK):
                        digest.update(chunk)
                        if time.monotonic() - last > 0.5:
                            last = time.monotonic()
                            self.watch.poll()
                with open(path, "rb") as f:
                    saved = storage.save(name, MovableFile(f, name=os.path.basename(path)))
                sha256, stored_size = digest.hexdigest(), os.path.getsize(storage.path(saved))
            else:
                opener = self.runner.sftp.open if hasattr(self.runner, "sftp") else open
                with opener(path, "rb") as raw:
                    if hasattr(raw, "prefetch"):
                        raw.prefetch(size)
                    reader = HashingReader(raw, self.watch)
                    saved = storage.save(name, File(reader, name=os.path.basename(path)))
                sha256, stored_size = reader.sha256.hexdigest(), reader.size
            if stored_size != size:
                raise Failed(f"Unexpected output: stored {stored_size:,} bytes of {relative}, but it has {size:,}",
                             cause=converters.Cause.FORMAT)
            with storage.open(saved, "rb") as stored:
                head = stored.read(HEAD_BYTES)
            try:
                details.update(converters.check_signature(image_type, head))
            except converters.FormatMismatch as exc:
                raise Failed(f"Unexpected output: {exc}", cause=converters.Cause.FORMAT) from None
            artifact.file.name, artifact.sha256, artifact.details = saved, sha256, details
            checksum = storage.save(artifact.checksum_name, ContentFile(artifact.checksum_text().encode()))
            artifact.save()
        except objectstore.storage_errors() as exc:
            self._remove_partial(storage, name, saved, checksum, artifact)
            raise Failed(objectstore.explain(exc, doing=f"store {artifact.filename}")) from None
        except BaseException:
            self._remove_partial(storage, name, saved, checksum, artifact)
            raise
        facts = ", ".join(f"{k.replace('_', ' ')} {_fact(v)}" for k, v in details.items()
                          if k not in ("members", "format") and v)
        self.log(f"Stored {artifact.filename}: sha256 {sha256}; {artifact.format}" + (f", {facts}" if facts else "")
                 + (f"; registered {ami_id}" if ami_id else ""))
        return artifact
