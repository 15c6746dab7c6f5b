"""Access helpers for stages, promotions, approver groups, freezes and change windows.

Same rule as `portal.access`: outside the user's teams an object does not exist (404); a role that may see but not act
gets 403.
"""

from portal.access import get_object_for_user
from portal.models import Action

from .models import ApproverGroup, ChangeWindow, Promotion, Stage, StageFreeze


def get_stage_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(Stage.objects.select_related("team"), user, team_of=lambda s: s.team, action=action,
                               pk=pk)


def get_promotion_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(Promotion.objects.with_related().select_related("target_stage__team"), user,
                               team_of=lambda p: p.target_stage.team, action=action, pk=pk)


def get_approver_group_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(ApproverGroup.objects.select_related("team"), user, team_of=lambda g: g.team,
                               action=action, pk=pk)


def get_freeze_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(StageFreeze.objects.select_related("stage", "stage__team"), user,
                               team_of=lambda f: f.stage.team, action=action, pk=pk)


def get_change_window_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(ChangeWindow.objects.select_related("stage", "stage__team"), user,
                               team_of=lambda w: w.stage.team, action=action, pk=pk)
