from django.utils.functional import SimpleLazyObject

from portal.access import team_roles
from portal.models import ROLE_ACTIONS, Action

from .models import ApproverGroup, Promotion

APPROVER_ROLES = {role for role, actions in ROLE_ACTIONS.items() if Action.APPROVE in actions}


def inbox(request):
    """`nav_inbox_count`: promotions waiting for the user's decision, for the navigation's badge; run only if the page
    renders the badge. Most people approve nowhere: a user with no approving role (roles are read once per request
    anyway) and in no approver group is asked nothing, and is spared the inbox's query of five joins on every page."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"nav_inbox_count": SimpleLazyObject(lambda: _waiting_count(user))}


def _waiting_count(user):
    if not APPROVER_ROLES.intersection(team_roles(user).values()) and \
            not ApproverGroup.members.through.objects.filter(user=user).exists():
        return 0
    return Promotion.objects.waiting_for(user).count()
