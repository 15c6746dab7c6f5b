from django.apps import AppConfig

from portal import registry


class SupplyChainConfig(AppConfig):
    name = "builds.supplychain"
    label = "supplychain"
    verbose_name = "Supply chain: signing keys, signatures, SBOMs and vulnerabilities"

    def ready(self):
        # Models load only once the app registry is ready, i.e. here.
        from builds.pipeline import BUILD_SUCCEEDED
        from builds.releases.apply import COPY_TRUST

        from .services import build_succeeded, copy_trust

        # Releases copies a digest to a stage under the trust the stage requires (releases never import this app).
        registry.provide(COPY_TRUST, copy_trust)
        # Keys that sign new builds sign each one that succeeds (builds never import this app).
        registry.subscribe(BUILD_SUCCEEDED, build_succeeded)
