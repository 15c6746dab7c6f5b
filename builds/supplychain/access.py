"""Access helpers for signing keys. Builds, stages and promotions keep theirs (`builds.access`,
`builds.releases.access`); advisories are portal-wide public facts, readable by any signed-in user.

Same rule as `portal.access`: outside the user's teams an object does not exist (404); a role that may see but not act
gets 403.
"""

from portal.access import get_object_for_user
from portal.models import Action

from .models import KeyRotation, SigningKey


def get_signing_key_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(SigningKey.objects.select_related("team"), user, team_of=lambda k: k.team,
                               action=action, pk=pk)


def get_rotation_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(KeyRotation.objects.select_related("old_key", "old_key__team", "new_key", "run"), user,
                               team_of=lambda r: r.old_key.team, action=action, pk=pk)
