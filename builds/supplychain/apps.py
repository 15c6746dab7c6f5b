from pathlib import Path

from django.apps import AppConfig

from portal import registry


class SupplyChainConfig(AppConfig):
    name = "builds.supplychain"
    label = "supplychain"
    verbose_name = "Supply chain: signing keys, signatures, SBOMs and vulnerabilities"

    def ready(self):
        # Models load only once the app registry is ready, i.e. here.
        from builds.cleanup import IMAGE_DELETED
        from builds.pipeline import BUILD_SUCCEEDED
        from builds.releases.apply import COPY_TRUST, STAGE_SIGNATURE_REQUIREMENT
        from portal.models import Action, RunKind

        from .gate import signature_check, vulnerability_check
        from .models import stored_sboms
        from .notifications import FOUND, RUNNING
        from .services import (
            build_succeeded,
            copy_trust,
            image_deleted,
            sbom_build_succeeded,
            sboms_image_deleted,
            stage_signature_requirement,
        )

        # Releases copies a digest to a stage under the trust the stage requires (releases never import this app).
        registry.provide(COPY_TRUST, copy_trust)
        # A stage that requires a key refuses, as it is asked for, a promotion of a digest without a signature it takes.
        registry.promotion_check(signature_check)
        # A stage may refuse digests with known vulnerabilities of a given severity, unless an approver overrides it.
        registry.promotion_check(vulnerability_check)
        # Hosts switching to a stage that requires a key make bootc enforce the container policy (hosts read releases).
        registry.provide(STAGE_SIGNATURE_REQUIREMENT, stage_signature_requirement)
        # Keys that sign new builds sign each one that succeeds (builds never import this app).
        registry.subscribe(BUILD_SUCCEEDED, build_succeeded)
        # Each build that succeeds has its SBOM written to object storage at once.
        registry.subscribe(BUILD_SUCCEEDED, sbom_build_succeeded)
        # An image retention deletes takes its signatures and SBOMs with it (cleanup never imports this app).
        registry.subscribe(IMAGE_DELETED, image_deleted)
        registry.subscribe(IMAGE_DELETED, sboms_image_deleted)
        # Backups record the SBOMs' objects, which live outside the database (portal.backups).
        registry.stored_files(stored_sboms)
        # The approval card says who signed the digest and what the stage requires; the build page links its SBOM,
        # signatures and vulnerabilities.
        registry.fragment("promotion.trust", url_name="supplychain:promotion_trust")
        registry.fragment("build.supply_chain", url_name="supplychain:build_card")
        # A feed that newly finds advisories for what a stage holds, or for what hosts boot that no stage holds, tells
        # the team (builds.supplychain.notifications; which digests hosts boot is asked of hosts, never imported).
        registry.notification_event(FOUND, "Vulnerabilities found in what a stage holds",
                                    schema=str(Path(__file__).parent / "event_schemas" / f"{FOUND}.v1.json"))
        registry.notification_event(RUNNING, "Vulnerabilities found in what hosts boot that no stage holds",
                                    schema=str(Path(__file__).parent / "event_schemas" / f"{RUNNING}.v1.json"))
        # A key rotation is a team admin's to start and resume, and so to stop.
        registry.run_cancel(kind=RunKind.KEY_ROTATION, action=Action.ADMIN)
        registry.team_link(label="Signing keys and what each stage requires", icon="key", url_name="supplychain:keys",
                           action=Action.VIEW, order=20)
