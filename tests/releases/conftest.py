"""The release tests' fixtures: the seed images, built and pushed once per session, and per test a definition whose
builds are those images (PromoEnv, in tests/releases/fixtures.py)."""

import json
import subprocess

import pytest

from tests.builds.fixtures import skopeo_inspect
from tests.releases.fixtures import SEED_REPOSITORY, SEEDS, PromoEnv, SeedImage, seed_containerfile


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
