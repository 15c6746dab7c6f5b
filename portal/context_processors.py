from . import twofactor
from .access import team_roles
from .models import Team


def navigation(request):
    """The team switcher's choices and the current team, for every page; and the teams that ask this user for a second
    factor they have not signed in with (a banner says so)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    teams = list(Team.objects.visible_to(user).only("name", "slug", "require_two_factor"))
    team_id = request.session.get("team_id")
    current = next((t for t in teams if t.pk == team_id), None)
    roles = team_roles(user)
    needing = [] if twofactor.is_verified(user) else [
        t for t in teams if t.require_two_factor and roles.get(t.pk) in twofactor.ROLES_THAT_NEED_IT]
    return {"nav_teams": teams, "nav_team": current, "nav_roles": roles, "nav_two_factor_teams": needing}
