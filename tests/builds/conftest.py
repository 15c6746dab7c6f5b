"""What the builds app's page and integration tests share: a definition with one revision, and a queued build of it."""

import pytest

from builds import services
from tests.builds.fixtures import CONTAINERFILE


@pytest.fixture
def definition(personas):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os",
                                            description="Web tier")
    services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE,
                             message="first")
    return definition


@pytest.fixture
def build(definition, personas):
    return services.build_start(revision=definition.current_revision(), user=personas.developer)
