from . import twofactor
from .access import team_roles, user_teams


def navigation(request):
    """The team switcher's choices and the current team, for every page; and the teams that ask this user for a second
    factor they have not signed in with (a banner says so). From the roles and teams read once per request."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    teams = user_teams(user)
    team_id = request.session.get("team_id")
    current = next((t for t in teams if t.pk == team_id), None)
    roles = team_roles(user)
    needing = [] if twofactor.is_verified(user) else [
        t for t in teams if t.require_two_factor and roles.get(t.pk) in twofactor.ROLES_THAT_NEED_IT]
    return {"nav_teams": teams, "nav_team": current, "nav_roles": roles, "nav_two_factor_teams": needing}
