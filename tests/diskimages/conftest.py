"""What the disk image pages, their API and their other tests share: media under the test's own directory, a succeeded
build, a finished conversion of it, and a saved configuration (preset) that gives the user `ops` an SSH key."""

import pytest

from builds.diskimages import services_presets as presets
from tests.diskimages.rows import KEY, finished_conversion, succeeded_build


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.DISK_IMAGE_BUILDER_IMAGES = ["quay.io/centos-bootc/bootc-image-builder:latest",
                                          "registry.redhat.io/rhel9/bootc-image-builder:latest"]
    settings.DISK_IMAGE_BACKEND = "bib"
    return settings.MEDIA_ROOT


@pytest.fixture
def build(personas, media):
    return succeeded_build(personas.team, personas.developer)


@pytest.fixture
def conversion(build, personas):
    return finished_conversion(build, personas.developer, types=["qcow2", "raw"])


@pytest.fixture
def preset(personas):
    return presets.preset_save(team=personas.team, user=personas.developer, name="ops access",
                                  config={"customizations": {"user": [{"name": "ops", "key": KEY}]}})
