"""Real parts for the build tests: a podman store with a busybox base image, docker-registry on loopback (open, and one
with htpasswd auth), a local builder row pointing at the store, and a real sshd for remote builders.

Its fixtures reach every test through tests/conftest.py's pytest_plugins: a test names them as parameters and imports
only helpers (BASE_IMAGE, WORKER_ENV, skopeo_inspect).
"""

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from tests.helpers import allow_egress, free_port, require_tool, wait_for

BASE_IMAGE = "localhost/base:latest"
# The Containerfile of the page tests' definitions (tests/builds/conftest.py): never built, only saved and queued.
CONTAINERFILE = "FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN dnf -y install httpd\nRUN bootc container lint\n"


def _umount_all_under(path):
    """podman leaves overlay mounts in its store; unmount them so the directory can be removed."""
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[1].startswith(str(path))]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class PodmanStore:
    def __init__(self, directory):
        self.directory = Path(directory)
        self.root = str(self.directory / "root")
        self.runroot = str(self.directory / "runroot")

    def args(self):
        return ["podman", "--root", self.root, "--runroot", self.runroot]

    def run(self, *args, check=True, **kwargs):
        return subprocess.run([*self.args(), *args], check=check, capture_output=True, text=True, **kwargs)

    def import_busybox(self):
        from portal.demo.web_os import import_busybox_base

        import_busybox_base(self.args(), BASE_IMAGE)

    def image_exists(self, ref):
        return self.run("image", "exists", ref, check=False).returncode == 0

    def cleanup(self):
        # Never `podman system reset`: it also empties podman's shared tmpdir (/run/libpod), which breaks every other
        # podman running on the machine at that moment (other test sessions, a builder) with "alive: no such file".
        _umount_all_under(self.directory)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_store():
    """A podman store of the session's own (--root/--runroot) holding localhost/base:latest (busybox)."""
    require_tool("podman", "busybox", "runc")
    store = PodmanStore(tempfile.mkdtemp(prefix="portal-podman-"))
    store.import_busybox()
    yield store
    store.cleanup()


# --- Two architectures: amd64 natively, arm64 through qemu-user-static -------------------------------------------------

ARM64_BUSYBOX = Path(os.environ.get("PORTAL_TEST_KERNEL_DIR", "/var/cache/portal-tests")) / "busybox-arm64"
BINFMT_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


def require_arm64_emulation():
    """arm64 programs run here: qemu-aarch64 registered with binfmt_misc, and Debian's arm64 busybox-static at hand
    (`scripts/system-deps.sh test` does both on a new machine)."""
    if not ARM64_BUSYBOX.is_file() or not BINFMT_AARCH64.is_file():
        pytest.skip(f"arm64 emulation is not set up ({BINFMT_AARCH64} or {ARM64_BUSYBOX} missing): run "
                    "scripts/system-deps.sh test as root")
    if "enabled" not in BINFMT_AARCH64.read_text():
        pytest.skip(f"{BINFMT_AARCH64} is disabled")


def busybox_rootfs(directory, busybox):
    """A busybox root file system (the binary, its applet links, /etc/passwd and /etc/group) in `directory`. The
    applets are the amd64 busybox's list: both are Debian's busybox-static of the same version."""
    rootfs = Path(directory)
    for path in ("bin", "etc", "tmp"):
        (rootfs / path).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run([shutil.which("busybox"), "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    return rootfs


@pytest.fixture(scope="session")
def multiarch_store():
    """A podman store whose localhost/base:latest is a manifest list of a busybox image for amd64 and one for arm64
    (Debian's arm64 busybox-static): `podman build --platform linux/arm64` takes the arm64 one, and its RUN steps run
    through qemu-user-static, as a multi-architecture base from a registry (centos-bootc) would be used."""
    require_tool("podman", "busybox", "runc")
    require_arm64_emulation()
    store = PodmanStore(tempfile.mkdtemp(prefix="portal-podman-multiarch-"))
    try:
        for arch, busybox in (("amd64", shutil.which("busybox")), ("arm64", ARM64_BUSYBOX)):
            with tempfile.TemporaryDirectory(prefix="portal-base-") as directory:
                rootfs = busybox_rootfs(directory, busybox)
                tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
                try:
                    subprocess.run([*store.args(), "import", "--arch", arch, "--change", 'CMD ["/bin/sh"]', "-",
                                    f"localhost/base:{arch}"], stdin=tar.stdout, check=True, capture_output=True,
                                   timeout=120)
                finally:
                    tar.stdout.close()
                    tar.wait()
        store.run("manifest", "create", BASE_IMAGE)
        for arch in ("amd64", "arm64"):
            store.run("manifest", "add", BASE_IMAGE, f"containers-storage:localhost/base:{arch}")
        yield store
    finally:
        store.cleanup()


class Registry:
    """docker-registry on a free loopback port, allowed by the egress policy while it runs."""

    def __init__(self, directory, *, htpasswd=None, delete=True):
        self.directory = Path(directory)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.directory / 'data'}",
            "  delete:",
            f"    enabled: {'true' if delete else 'false'}",
            "http:",
            f"  addr: {self.address}",
        ]
        if htpasswd:
            (self.directory / "htpasswd").write_text(htpasswd)
            config += ["auth:", "  htpasswd:", "    realm: portal-tests", f"    path: {self.directory / 'htpasswd'}"]
        (self.directory / "config.yml").write_text("\n".join(config) + "\n")
        self.log = open(self.directory / "registry.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(["docker-registry", "serve", str(self.directory / "config.yml")],
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._answers, timeout=20, what="docker-registry to answer")
        self.disallow = allow_egress(self.address)

    def _answers(self):
        try:
            urllib.request.urlopen(f"http://{self.address}/v2/", timeout=0.5)
            return True
        except urllib.error.HTTPError:
            return True  # 401 from the authenticated one: it is up
        except OSError:
            return False

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()
        self.disallow()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def oci_registry():
    """A real docker-registry on a loopback port, open (no auth); the portal's REGISTRY_URL points at it."""
    require_tool("docker-registry", "skopeo")
    registry = Registry(tempfile.mkdtemp(prefix="portal-registry-"))
    previous = settings.REGISTRY_URL, settings.REGISTRY_INSECURE
    settings.REGISTRY_URL, settings.REGISTRY_INSECURE = registry.address, True
    yield registry
    settings.REGISTRY_URL, settings.REGISTRY_INSECURE = previous
    registry.stop()


AUTH_USER, AUTH_PASSWORD = "pusher", "s3cret-push"


@pytest.fixture(scope="session")
def auth_registry():
    """A second docker-registry that wants a login (htpasswd): pushes without credentials are refused."""
    require_tool("docker-registry", "htpasswd")
    line = subprocess.run(["htpasswd", "-Bbn", AUTH_USER, AUTH_PASSWORD], capture_output=True, text=True,
                          check=True).stdout.strip()
    registry = Registry(tempfile.mkdtemp(prefix="portal-registry-auth-"), htpasswd=line + "\n")
    registry.user, registry.password = AUTH_USER, AUTH_PASSWORD
    yield registry
    registry.stop()


@pytest.fixture
def build_settings(settings):
    """In-process builds: never pull (nothing to pull from here), check cancels often."""
    settings.BUILD_PULL_POLICY = "never"
    settings.BUILD_CANCEL_POLL_SECONDS = 0.5
    return settings


@pytest.fixture
def local_builder(db, podman_store):
    from builds.models import Builder
    from builds.services import local_architecture

    return Builder.objects.create(name="local", kind="local", architecture=local_architecture(), capacity=2,
                                  podman_root=podman_store.root, podman_runroot=podman_store.runroot)


WORKER_ENV = {"BUILD_PULL_POLICY": "never", "BUILD_CANCEL_POLL_SECONDS": "0.5"}


def processes_running(*argv):
    """Pids of the processes on this machine whose command line is exactly argv."""
    wanted = "\0".join(argv).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().rstrip(b"\0") == wanted:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def a_long_sleep():
    """Seconds for a `sleep` in a build that the test ends itself, unique on this machine: the test finds the sleep (and
    may kill it) by its command line, and another test session may be running the same test at the same moment."""
    return str(100_000 + secrets.randbelow(900_000))


def skopeo_copy(source, destination, *, all_architectures=False):
    """`skopeo copy` between the loopback registries, by digest: the copy has the source's digest (a manifest list's
    with every architecture, when `all_architectures`)."""
    subprocess.run(["skopeo", "copy", *(["--multi-arch=all"] if all_architectures else []), "--preserve-digests",
                    "--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{source}", f"docker://{destination}"],
                   check=True, capture_output=True, timeout=120)


# What the pipeline reads from a pushed image and records on its build.
PIPELINE_FACTS = ("image_id", "digest", "size", "labels", "architecture", "os", "base_image", "package_format",
                  "packages")


@pytest.fixture(scope="session")
def pipeline_images():
    """{Containerfile text: (repository, facts)} of the images `build_once` had the pipeline build this session."""
    return {}


def build_once(images, revision, user):
    """A succeeded build of `revision`, for tests about what happens to a built image (boot tests, conversions), not
    about the build. The first time the session builds a Containerfile, the portal's own pipeline builds it (podman
    build, push, inspect, the package list) exactly as a worker would. A later build of the same text gets that
    image, by digest, under its own tags in its own repository (skopeo copy, as a retry of a push would leave it) and
    the facts the pipeline read from it: some 0.2 s instead of the 2-4 s of another podman build of the same image.
    Either way the build announces what a worker's does: build.started, then build.succeeded (events, webhooks) and,
    after commit, the pipeline's BUILD_SUCCEEDED (its SBOM stored, signed by the team's keys that sign new builds)."""
    from builds import pipeline, services
    from builds.models import Build

    started = services.build_start(revision=revision, user=user)
    first = images.get(revision.containerfile)
    if first is None:
        pipeline.build_execute(started.pk)
        done = Build.objects.with_related().get(pk=started.pk)
        assert done.succeeded, done.run.exit_reason
        images[revision.containerfile] = (done.repository, {name: getattr(done, name) for name in PIPELINE_FACTS})
        return done
    source, facts = first
    repository = started.repository or revision.definition.repository
    tags = started.tag_names()
    for tag in tags:
        skopeo_copy(f"{source}@{facts['digest']}", f"{repository}:{tag}")
    return copied_build_succeeds(started, repository=repository, tags=tags, facts=facts)


def copied_build_succeeds(build, *, repository, tags, facts):
    """A build whose image was copied into its tags finishes as a worker's does: its run starts, build.started, the
    facts the pipeline read recorded, its run succeeds, build.succeeded (events, webhooks) and, after commit, the
    pipeline's BUILD_SUCCEEDED (its SBOM stored, signed by the team's keys that sign new builds)."""
    from django.db import transaction

    from builds import pipeline
    from builds.models import Build
    from builds.notifications import BuildEvent, notify_build
    from portal.models import RunStatus
    from portal.registry import announce
    from portal.services import run_finish, run_start

    run_start(build.run)
    notify_build(event=BuildEvent.BUILD_STARTED, build=build)
    Build.objects.filter(pk=build.pk).update(repository=repository, tags=tags, pushed_at=timezone.now(), **facts)
    run_finish(build.run, status=RunStatus.SUCCEEDED)
    done = Build.objects.with_related().get(pk=build.pk)
    notify_build(event=BuildEvent.BUILD_SUCCEEDED, build=done)
    transaction.on_commit(lambda: announce(pipeline.BUILD_SUCCEEDED, build_id=done.pk))
    return done


def skopeo_inspect(reference, *, tls_verify=False, creds=None):
    import json

    args = ["skopeo", "inspect", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if creds:
        args += ["--creds", creds]
    output = subprocess.run([*args, f"docker://{reference}"], capture_output=True, text=True, check=True).stdout
    return json.loads(output)


# --- A real sshd for remote builders ---------------------------------------------------------------------------------


class SSHServer:
    """OpenSSH's sshd on a loopback port, letting root in with one generated key (the builder's)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.port = free_port()
        host_key = self.directory / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        client_key = self.directory / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True)
        self.private_key = client_key.read_text()
        self.host_key = " ".join((self.directory / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        authorized = self.directory / "authorized_keys"
        authorized.write_text((self.directory / "client_key.pub").read_text())
        authorized.chmod(0o600)
        home = self.directory / "home"
        home.mkdir()
        config = self.directory / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"SetEnv HOME={home}",
            "",
        ]))
        Path("/run/sshd").mkdir(exist_ok=True)
        self.log = open(self.directory / "sshd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._listens, timeout=20, what="sshd to listen")

    def _listens(self):
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd():
    require_tool("sshd", "ssh-keygen")
    if os.geteuid() != 0:
        pytest.skip("the remote-builder sshd lets root in; run the suite as root (as CI does)")
    server = SSHServer(tempfile.mkdtemp(prefix="portal-sshd-"))
    time.sleep(0.05)
    yield server
    server.stop()
