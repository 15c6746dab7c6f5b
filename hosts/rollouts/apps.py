from django.apps import AppConfig

from portal import registry


class RolloutsConfig(AppConfig):
    name = "hosts.rollouts"
    label = "rollouts"
    verbose_name = "Rollouts"

    def ready(self):
        # Models load only once the app registry is ready, i.e. here.
        from builds.releases.apply import PROMOTION_APPLIED

        from .services import promotion_applied

        # A promotion to a stage whose hosts follow automatically starts a rollout (releases never import hosts).
        registry.subscribe(PROMOTION_APPLIED, promotion_applied)
        registry.dashboard_run_list(label="Rollouts", url_name="rollouts:list", order=25, across_teams=True)
        # The promotion card links the rollout a promotion started.
        registry.fragment("promotion.rollout", url_name="rollouts:of_promotion")
        # The host page says how the host is updated and links the rollouts that acted on it.
        registry.fragment("host.rollouts", url_name="rollouts:of_host")
        # The fleet view shows the rollouts under way and how far each has come.
        registry.fragment("fleet.rollouts", url_name="rollouts:of_fleet")
