"""Who may see and do what. Every view, fragment, websocket consumer and API call asks through these helpers.

The rule everywhere: an object outside the user's teams does not exist for them (404, so ids reveal nothing); an object
they may see but not act on is 403. Superusers may do everything. Help-desk users may read host state across teams
(`helpdesk_readable=True`) and nothing else.

Each object type has one `get_<type>_for_user(user, pk, *, action=...)` helper. Apps define their own next to their
models (`builds.access`, `hosts.access`) on top of `check_team_action`.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import HELPDESK_RUN_KINDS, ROLE_ACTIONS, Action, Membership, Run, Team


def team_roles(user):
    """{team_id: role} for the user, read once per user object (i.e. once per request)."""
    if not user.is_authenticated:
        return {}
    cached = getattr(user, "_team_roles_cache", None)
    if cached is None:
        cached = dict(Membership.objects.filter(user=user).values_list("team_id", "role"))
        user._team_roles_cache = cached
    return cached


def forget_roles(user):
    """Drop the cached roles, after a membership of this user changed."""
    target = getattr(user, "_wrapped", user)  # request.user and a socket's user are lazy proxies: the cache is inside
    getattr(target, "__dict__", {}).pop("_team_roles_cache", None)


def role_in(user, team):
    return team_roles(user).get(team.pk if isinstance(team, Team) else team)


def can(user, team, action, *, helpdesk_readable=False):
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    role = role_in(user, team)
    if role is not None and action in ROLE_ACTIONS[role]:
        return True
    return helpdesk_readable and user.is_helpdesk and action == Action.VIEW


def can_see(user, team, *, helpdesk_readable=False):
    return can(user, team, Action.VIEW, helpdesk_readable=helpdesk_readable)


def check_team_action(user, team, action, *, helpdesk_readable=False):
    """Raise Http404 when the user cannot see the team's objects at all, PermissionDenied when they cannot do `action`."""
    if not can_see(user, team, helpdesk_readable=helpdesk_readable):
        raise Http404("No such object.")
    if not can(user, team, action, helpdesk_readable=helpdesk_readable):
        raise PermissionDenied(f"Your role in {team} does not allow you to {Action(action).label}.")


def get_object_for_user(queryset, user, *, team_of, action=Action.VIEW, helpdesk_readable=False, **lookup):
    """Fetch one object by `lookup` from `queryset` and check `action` on its team (`team_of(obj)`).

    The building block of every app's `get_<type>_for_user`: missing objects and objects outside the user's teams are
    the same 404. `action` and `helpdesk_readable` may be callables of the object.
    """
    if any(isinstance(value, str) and "\x00" in value for value in lookup.values()):
        raise Http404("No such object.")  # no key holds a NUL (PostgreSQL refuses to even compare one)
    try:
        obj = queryset.get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise Http404("No such object.") from None
    readable = helpdesk_readable(obj) if callable(helpdesk_readable) else helpdesk_readable
    check_team_action(user, team_of(obj), action(obj) if callable(action) else action, helpdesk_readable=readable)
    return obj


def get_team_for_user(user, slug, *, action=Action.VIEW):
    return get_object_for_user(Team.objects.all(), user, team_of=lambda team: team, action=action, slug=slug)


def get_run_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(
        Run.objects.select_related("team", "started_by"),
        user,
        team_of=lambda run: run.team,
        action=action,
        helpdesk_readable=lambda run: run.kind in HELPDESK_RUN_KINDS,
        pk=pk,
    )


def teams_where(user, action):
    """Teams in which the user may do `action` (all teams for superusers)."""
    if user.is_superuser:
        return Team.objects.all()
    roles = [role for role, actions in ROLE_ACTIONS.items() if action in actions]
    return Team.objects.filter(memberships__user=user, memberships__role__in=roles)
