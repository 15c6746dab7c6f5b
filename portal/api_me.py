"""`GET /api/v1/me/`: who a token acts as, in which teams, with which scopes and until when. `imp login` and
`imp whoami` check a token with it."""

from datetime import datetime

from ninja import Field, Router, Schema

from .access import team_roles, user_teams

router = Router(tags=["tokens"])


class TeamRoleOut(Schema):
    slug: str
    role: str | None = Field(None, description="None for a superuser who is no member.")


class TokenSummaryOut(Schema):
    id: int
    name: str
    hint: str
    expires_at: datetime | None
    two_factor: bool = Field(..., description="Made in a sign-in verified with a second factor.")


class MeOut(Schema):
    user: str = Field(..., description="The user the token acts as (a team token's own user).")
    team: str | None = Field(None, description="A team token's team; none for a user's token.")
    scopes: list[str]
    teams: list[TeamRoleOut]
    token: TokenSummaryOut


@router.get("", response=MeOut, summary="Who this token acts as: user, teams and roles, scopes, expiry")
def me(request):
    token, roles = request.auth, team_roles(request.user)
    return {
        "user": request.user.username, "team": token.team.slug if token.team_id else None, "scopes": token.scopes,
        "teams": [{"slug": team.slug, "role": roles.get(team.pk)} for team in user_teams(request.user)],
        "token": {"id": token.pk, "name": token.name, "hint": token.hint, "expires_at": token.expires_at,
                  "two_factor": token.two_factor},
    }
