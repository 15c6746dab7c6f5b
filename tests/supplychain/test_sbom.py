"""The SBOM of a build: CycloneDX 1.6, valid against the schema, the digest as its subject, each package with its
package URL."""

import json

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from builds.supplychain.sbom import sbom_json


def test_the_sbom_is_valid_cyclonedx_with_the_digest_as_subject_and_every_package(promo):
    build = promo.builds[0]
    text = sbom_json(build)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    document = json.loads(text)
    subject = document["metadata"]["component"]
    assert subject["type"] == "container" and subject["version"] == build.digest
    assert subject["purl"].startswith(f"pkg:oci/{promo.repository.rsplit('/', 1)[1]}@{build.digest}?")
    purls = sorted(component["purl"] for component in document["components"])
    assert purls == ["pkg:deb/bash@5.1-2", "pkg:deb/curl@7.88.1-10", "pkg:deb/openssl@3.0.11-1"]
    assert document["dependencies"][0]["ref"] == build.image_ref


def test_the_same_build_gives_the_same_sbom_every_time(promo):
    assert sbom_json(promo.builds[1]) == sbom_json(promo.builds[1])
