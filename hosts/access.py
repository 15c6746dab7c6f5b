"""Access helpers for hosts, actions, jump hosts and team keys (on top of `portal.access`).

Help-desk users read every team's hosts and history (`helpdesk_readable=True`) but get no actions, and never see keys.
"""

from django.core.exceptions import PermissionDenied

from portal.access import can, check_team_action, get_object_for_user, get_team_for_user
from portal.models import Action

from .models import Host, HostAction, JumpHost


def get_host_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(
        Host.objects.select_related("team", "stage", "jump_host", "host_key_confirmed_by", "approved_by", "enrolled_with"),
        user, team_of=lambda host: host.team, action=action, helpdesk_readable=True, pk=pk,
    )


def get_host_files_for_user(user, pk):
    """The host whose changed /etc files (diffs, secrets masked) are asked for: for the team's members only. Help-desk
    users read every host's state, and the paths that changed, but not what the files say."""
    host = get_host_for_user(user, pk)
    if not can(user, host.team, Action.VIEW):
        raise PermissionDenied(f"What the files on {host} say is shown to the members of {host.team}.")
    return host


def get_host_action_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(
        HostAction.objects.select_related("host", "host__team", "run", "requested_by"),
        user, team_of=lambda a: a.host.team, action=action, helpdesk_readable=True, pk=pk,
    )


def get_jump_host_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(JumpHost.objects.select_related("team"), user, team_of=lambda j: j.team, action=action,
                               pk=pk)


def get_team_keys_for_user(user, slug, *, action=Action.VIEW):
    """The team whose SSH key page is asked for. Team members only: help-desk users see no credentials."""
    team = get_team_for_user(user, slug, action=Action.VIEW)
    check_team_action(user, team, action)
    return team
