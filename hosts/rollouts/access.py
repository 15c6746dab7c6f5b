"""Access helpers for rollouts and rollout policies (on top of `portal.access`): team members see their team's,
help-desk users read every team's (host state and history) but act on none; operators start, pause, resume and abort;
team admins change a stage's policy."""

from builds.releases.models import Stage
from portal.access import get_object_for_user
from portal.models import Action

from .models import Rollout


def get_rollout_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(Rollout.objects.select_related("team", "stage", "run", "started_by", "promotion"),
                               user, team_of=lambda r: r.team, action=action, helpdesk_readable=True, pk=pk)


def get_stage_for_rollouts(user, pk, *, action=Action.VIEW):
    """The stage whose rollouts or policy are asked for."""
    return get_object_for_user(Stage.objects.select_related("team"), user, team_of=lambda s: s.team, action=action,
                               helpdesk_readable=True, pk=pk)
