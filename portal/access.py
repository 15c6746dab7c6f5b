"""Who may see and do what. Every view, fragment, websocket consumer and API call asks through these helpers.

The rule everywhere: an object outside the user's teams does not exist for them (404, so ids reveal nothing); an object
they may see but not act on is 403. Superusers may do everything. Help-desk users may read host state across teams
(`helpdesk_readable=True`) and nothing else. A team may require a second factor for approving and administering
(`Team.require_two_factor`): then those actions need a sign-in verified with one, superusers included.

Each object type has one `get_<type>_for_user(user, pk, *, action=...)` helper. Apps define their own next to their
models (`builds.access`, `hosts.access`) on top of `check_team_action`.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import reverse

from .models import HELPDESK_RUN_KINDS, ROLE_ACTIONS, Action, Membership, NotificationWebhook, Run, Team, WebhookDelivery


def team_roles(user):
    """{team_id: role} for the user, read once per user object (i.e. once per request)."""
    return _memberships(user)[0]


def user_teams(user):
    """The teams the user sees, by name: those they are a member of, every team for a superuser (none when signed
    out). Read with the roles, once per user object (i.e. once per request): the team switcher, the current team and
    the pages' team filters share one query instead of asking again each."""
    return _memberships(user)[1]


def _memberships(user):
    if not user.is_authenticated:
        return {}, []
    cached = getattr(user, "_team_roles_cache", None)
    if cached is None:
        memberships = list(Membership.objects.filter(user=user).select_related("team").order_by("team__name"))
        roles = {m.team_id: m.role for m in memberships}
        teams = list(Team.objects.all()) if user.is_superuser else [m.team for m in memberships]
        cached = user._team_roles_cache = (roles, teams)
    return cached


def forget_roles(user):
    """Drop the cached roles and teams, after a membership of this user changed."""
    target = user
    while hasattr(target, "_wrapped"):  # request.user is a lazy proxy (of a lazy proxy, with OTPMiddleware)
        target = target._wrapped
    getattr(target, "__dict__", {}).pop("_team_roles_cache", None)


def role_in(user, team):
    return team_roles(user).get(team.pk if isinstance(team, Team) else team)


# What a team that requires a second factor asks it for.
SECOND_FACTOR_ACTIONS = (Action.APPROVE, Action.ADMIN)


def second_factor_refusal(user, team):
    """Why `user` may not approve or administer in `team` for want of a second factor, or "" when nothing stops them.

    A second factor belongs to a sign-in: OTPMiddleware gives a request's user `is_verified()`. A user loaded anywhere
    else (a task re-counting the approvals given earlier) carries no sign-in, and is judged on the role alone.
    """
    is_verified = getattr(user, "is_verified", None)
    if is_verified is None or not _requires_second_factor(team) or is_verified():
        return ""
    return (f"{team} requires approvers and admins to sign in with a second factor. Set one up on your two-factor page "
            f"({reverse('portal:two_factor')}), or sign in again with it.")


def _requires_second_factor(team):
    if isinstance(team, Team):
        return team.require_two_factor
    return Team.objects.filter(pk=team, require_two_factor=True).exists()


def can(user, team, action, *, helpdesk_readable=False):
    if not role_allows(user, team, action, helpdesk_readable=helpdesk_readable):
        return False
    return action not in SECOND_FACTOR_ACTIONS or not second_factor_refusal(user, team)


def role_allows(user, team, action, *, helpdesk_readable=False):
    """Whether the user's role (or superuser or help-desk flag) allows `action`, before any second-factor rule."""
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
    if not role_allows(user, team, action, helpdesk_readable=helpdesk_readable):
        raise PermissionDenied(f"Your role in {team} does not allow you to {Action(action).label}.")
    if action in SECOND_FACTOR_ACTIONS:
        refusal = second_factor_refusal(user, team)
        if refusal:
            raise PermissionDenied(refusal)


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


def user_teams_where(user, action):
    """`teams_where` as a list, from the teams and roles read once per request (for pages that only show or test it)."""
    if user.is_superuser:
        return user_teams(user)
    roles = team_roles(user)
    return [team for team in user_teams(user) if action in ROLE_ACTIONS[roles[team.pk]]]


def get_notification_webhook_for_user(user, pk, *, action=Action.ADMIN):
    """Webhooks hold a secret: only team admins see them."""
    return get_object_for_user(NotificationWebhook.objects.select_related("team"), user, team_of=lambda h: h.team,
                               action=action, pk=pk)


def get_webhook_delivery_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(WebhookDelivery.objects.select_related("webhook", "webhook__team"), user,
                               team_of=lambda d: d.webhook.team, action=action, pk=pk)

