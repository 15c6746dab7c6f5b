"""Real parts for the promotion tests: three tiny busybox images built once per session with podman and pushed to the
session's docker-registry, and per test a definition whose builds are those images.

The fixtures (seed_images, promo, eager_tasks) reach every test through tests/conftest.py's pytest_plugins: the release
tests and the supply chain's, which sign these images and promote them.

A test that applies promotions calls `env.push()` first: it copies the seed images (by digest, with skopeo) into the
test's own repository, so stage tags never leak between tests.
"""

import json
import subprocess
import uuid
from dataclasses import dataclass

import pytest

from tests.builds.fixtures import BASE_IMAGE, skopeo_copy, skopeo_inspect

SEED_REPOSITORY = "seed/promotions"

# Three versions of a tiny "OS": each adds, removes or upgrades a package and changes a label.
SEEDS = [
    {"version": "1.0", "packages": {"bash": "5.1-2", "openssl": "3.0.11-1", "curl": "7.88.1-10"}},
    {"version": "1.1", "packages": {"bash": "5.2.15-2", "openssl": "3.0.13-1", "nginx": "1.22.1-9"}},
    {"version": "1.2", "packages": {"bash": "5.2.15-2", "openssl": "3.0.14-1", "nginx": "1.24.0-1", "jq": "1.6-2"}},
]


@dataclass
class SeedImage:
    version: str
    digest: str
    size: int
    labels: dict
    packages: dict
    containerfile: str


def seed_containerfile(seed):
    status = "".join(f"Package: {name}\\nStatus: install ok installed\\nVersion: {version}\\n\\n"
                     for name, version in seed["packages"].items())
    return (f"FROM {BASE_IMAGE}\n"
            f"RUN mkdir -p /var/lib/dpkg && printf '{status}' > /var/lib/dpkg/status\n"
            f'LABEL containers.bootc=1 org.opencontainers.image.version="{seed["version"]}"\n')


def stage_digest(reference):
    """What `skopeo inspect` says `reference` (REPO:stage) resolves to."""
    return skopeo_inspect(reference)["Digest"]


class PromoEnv:
    """A definition of the personas' team whose builds 1, 2, 3 are the seed images (revision author and build starter:
    the developer), in a repository of its own."""

    def __init__(self, personas, registry, seeds, name="web-os"):
        from builds import services
        from builds.models import Build, RegistryCredential
        from portal.models import RunKind
        from portal.services import run_create, run_finish, run_start

        self.personas, self.registry, self.seeds = personas, registry, seeds
        self.team = personas.team
        self.repository = f"{registry.address}/platform/{name}-{uuid.uuid4().hex[:8]}"
        self.definition = services.definition_create(team=self.team, user=personas.developer, name=name,
                                                     repository=self.repository, description="The web tier's OS")
        # The team says its loopback registry is plain HTTP. (Not left to REGISTRY_URL: a test may bring a registry of
        # its own, and the setting names only the session's.)
        RegistryCredential.objects.get_or_create(team=self.team, registry=registry.address,
                                                 defaults={"insecure": True})
        self.stages = {stage.name: stage for stage in self.team.stages.all()}
        self.builds = []
        for number, seed in enumerate(seeds, start=1):
            revision = services.revision_create(definition=self.definition, user=personas.developer,
                                                containerfile=seed.containerfile, message=f"version {seed.version}")
            run = run_create(kind=RunKind.BUILD, title=f"Build {number}", team=self.team, started_by=personas.developer)
            run_start(run)
            run_finish(run, status="succeeded")
            build = Build.objects.create(
                definition=self.definition, revision=revision, number=number, run=run, platform="linux/amd64",
                repository=self.repository, digest=seed.digest, size=seed.size, labels=seed.labels,
                packages=seed.packages, package_format="dpkg", base_image=BASE_IMAGE, architecture="amd64",
                os="linux", tags=[f"build-{number}"],
            )
            self.builds.append(Build.objects.with_related().get(pk=build.pk))
        self.pushed = False

    def push(self):
        """Copy the seed images into this definition's repository (as build-N tags), so promotions can apply."""
        if not self.pushed:
            for number, seed in enumerate(self.seeds, start=1):
                skopeo_copy(f"{self.registry.address}/{SEED_REPOSITORY}@{seed.digest}", f"{self.repository}:build-{number}")
            self.pushed = True
        return self

    def ref(self, stage):
        return f"{self.repository}:{stage}"

    def apply(self, promotion):
        """Run the promotion's apply run in this process (what the promotion_apply task does)."""
        from builds.releases.apply import promotion_apply_execute
        from builds.releases.models import Promotion

        promotion.refresh_from_db()
        assert promotion.run_id, f"{promotion} has no apply run ({promotion.status}: {promotion.status_note})"
        promotion_apply_execute(promotion.run_id)
        return Promotion.objects.with_related().get(pk=promotion.pk)

    def promote(self, build, stage, *, user=None, approvers=(), apply=True, expect_applied=True, **kwargs):
        """Request, approve by `approvers` and apply: the whole gate, for setting a scene."""
        from builds.releases import services as promotions

        promotion = promotions.promotion_request(definition=self.definition, build=build, target_stage=self.stages[stage],
                                                 user=user or self.personas.developer,
                                                 reason=kwargs.pop("reason", f"ship {build.number}"), **kwargs)
        for approver in approvers:
            promotions.promotion_approve(promotion=promotion, user=approver, digest=promotion.digest, comment="ok")
        if not apply:
            return promotion
        promotion = self.apply(promotion)
        if expect_applied:
            assert promotion.status == "applied", f"{promotion}: {promotion.status}: {promotion.status_note}"
        return promotion


@pytest.fixture(scope="session")
def seed_images(podman_store, oci_registry, tmp_path_factory):
    """The three seed images, built and pushed once: [SeedImage], oldest first."""
    directory = tmp_path_factory.mktemp("promotion-seeds")
    images = []
    for seed in SEEDS:
        containerfile = seed_containerfile(seed)
        (directory / "Containerfile").write_text(containerfile)
        tag = f"{oci_registry.address}/{SEED_REPOSITORY}:{seed['version']}"
        podman_store.run("build", "--pull=never", "-f", str(directory / "Containerfile"), "-t", tag, str(directory),
                         timeout=120)
        digestfile = directory / "digest"
        pushed = podman_store.run("push", "--tls-verify=false", "--digestfile", str(digestfile), tag, tag, timeout=120,
                                  check=False)
        assert pushed.returncode == 0, pushed.stderr
        digest = digestfile.read_text().strip()
        reference = f"{oci_registry.address}/{SEED_REPOSITORY}@{digest}"
        inspected = skopeo_inspect(reference)
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
                             capture_output=True, text=True, check=True).stdout
        size = sum(layer["size"] for layer in json.loads(raw)["layers"])
        images.append(SeedImage(version=seed["version"], digest=digest, size=size, labels=inspected["Labels"],
                                 packages=dict(seed["packages"]), containerfile=containerfile))
    return images


@pytest.fixture
def promo(personas, oci_registry, seed_images):
    return PromoEnv(personas, oci_registry, seed_images)


@pytest.fixture
def eager_tasks(settings):
    """Celery tasks run in-process when enqueued (with django_capture_on_commit_callbacks(execute=True))."""
    from portal.celery import app

    previous = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


def payload_of(delivery):
    return json.loads(json.dumps(delivery.payload))
