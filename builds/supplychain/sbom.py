"""A CycloneDX SBOM of a build: the image (by digest) as its subject, and every package the portal read from the
image's package database (rpm, dpkg or apk) as a component with its package URL.

It is written from the build's stored package list whenever it is asked for, so it lives exactly as long as the build
and says the same every time (its serial number is derived from the digest, its timestamp is the push).
"""

from __future__ import annotations

import uuid

from packageurl import PackageURL

PURL_TYPES = {"dpkg": "deb", "rpm": "rpm", "apk": "apk"}
SERIAL_NAMESPACE = uuid.UUID("3f0f3a1e-5b1c-4b8e-9a57-8e0c6f7b2d11")


def sbom_json(build) -> str:
    """The build's SBOM as CycloneDX 1.6 JSON."""
    # cyclonedx is heavy (a tenth of a second to import): loaded by the one path that writes an SBOM, not by every
    # process that starts Django.
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    repository = build.repository or build.definition.repository
    name = repository.rsplit("/", 1)[-1]
    subject = Component(
        type=ComponentType.CONTAINER, name=name, version=build.digest, bom_ref=build.image_ref,
        purl=PackageURL(type="oci", name=name, version=build.digest,
                        qualifiers={"repository_url": repository, "arch": build.architecture or ""} if
                        build.architecture else {"repository_url": repository}),
        description=f"{build.definition} build {build.number}",
    )
    bom = Bom(serial_number=uuid.uuid5(SERIAL_NAMESPACE, build.digest or str(build.pk)))
    bom.metadata.component = subject
    bom.metadata.timestamp = build.pushed_at or build.run.finished_at or build.run.created_at
    purl_type = PURL_TYPES.get(build.package_format)
    components = []
    for package, version in sorted((build.packages or {}).items()):
        purl = PackageURL(type=purl_type, name=package, version=str(version)) if purl_type else None
        component = Component(type=ComponentType.LIBRARY, name=package, version=str(version), purl=purl,
                              bom_ref=f"{purl_type or 'pkg'}:{package}@{version}")
        components.append(component)
        bom.components.add(component)
    bom.register_dependency(subject, components)
    return JsonV1Dot6(bom).output_as_string(indent=2)
