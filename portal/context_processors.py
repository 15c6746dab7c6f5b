from .access import team_roles
from .models import Team


def navigation(request):
    """The team switcher's choices and the current team, for every page."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    teams = list(Team.objects.visible_to(user).only("name", "slug"))
    team_id = request.session.get("team_id")
    current = next((t for t in teams if t.pk == team_id), None)
    return {"nav_teams": teams, "nav_team": current, "nav_roles": team_roles(user)}
