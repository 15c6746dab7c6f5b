"""API tokens: made, revoked and checked. A user's own token acts as them; a team's token acts through a user of its
own, a member of the team with the one role its scopes need (see `token_create`). The REST API (`portal.api`) and the
websocket's token sign-in (`portal.socketauth`) check them here; the token pages are in `portal/views_account.py`."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from .access import check_team_action
from .clientip import client_ip
from .models import PERSONAL_SCOPES, AccessToken, Action, Membership, Role, Scope, Team, User
from .services import audit


def token_create(*, actor, name, scopes, expires_at=None, team=None, verified=False, request=None):
    """A new API token; returns (token row, the secret shown once).

    Without `team`: the actor's own token, acting as them. With `team`: the team's token (for pipelines that outlive a
    person), which only a team admin makes. A team token acts through a user of its own, a member of that team with the
    one role its scopes need (read: viewer; build, promote: developer; operate: operator), so every access helper,
    QuerySet and service treats it like anyone else; it never approves or administers. An approve-scoped personal token
    of a user in a team that requires a second factor needs a verified sign-in (`verified`) and expires within
    API_TOKEN_APPROVE_MAX_HOURS: an approval through the API is never easier than in the browser."""
    now = timezone.now()
    scopes = [s for s in Scope.values if s in set(scopes)] + sorted(set(scopes) - set(Scope.values))
    errors = {}
    if not name.strip():
        errors["name"] = "Give the token a name that says where it is used."
    if not scopes:
        errors["scopes"] = "Pick at least one scope."
    unknown = [s for s in scopes if s not in Scope.values]
    if unknown:
        errors["scopes"] = f"Unknown scope {unknown[0]!r}: pick from {', '.join(Scope.values)}."
    limit = now + timedelta(days=settings.API_TOKEN_MAX_DAYS) if settings.API_TOKEN_MAX_DAYS else None
    if expires_at is None:
        expires_at = limit
    elif expires_at <= now:
        errors["expires_at"] = "The expiry must be in the future."
    elif limit is not None and expires_at > limit:
        errors["expires_at"] = f"A token lives at most {settings.API_TOKEN_MAX_DAYS} days."
    role = None
    if team is not None:
        check_team_action(actor, team, Action.ADMIN)
        personal = [s for s in scopes if s in PERSONAL_SCOPES]
        if personal:
            errors["scopes"] = f"A team token cannot hold {personal[0]!r}: approving and administering are a person's acts."
        elif "scopes" not in errors:
            role = team_token_role(scopes)
            if role is None:
                errors["scopes"] = ("A team token acts with one role: build and promote (developer) or operate (operator), "
                                    "not both. Make two tokens.")
    elif Scope.APPROVE in scopes and _some_team_requires_second_factor(actor):
        if not verified:
            errors["scopes"] = ("A team you approve in requires a second factor: sign in with it, then make the token "
                                "with the approve scope.")
        approve_limit = now + timedelta(hours=settings.API_TOKEN_APPROVE_MAX_HOURS)
        if expires_at is None or expires_at > approve_limit:
            expires_at = approve_limit
    if errors:
        raise ValidationError(errors)
    secret = AccessToken.generate()
    with transaction.atomic():
        token = AccessToken.objects.create(
            name=name.strip()[:100], team=team, scopes=scopes, token_hash=AccessToken.hash_secret(secret),
            hint=secret[:12], two_factor=bool(verified) and team is None, created_by=actor, expires_at=expires_at,
            user=actor if team is None else None)
        if team is not None:
            bot = User(username=f"token-{team.slug[:80]}-{token.pk}", first_name=f"API token {token.name}"[:150],
                       is_active=True)
            bot.set_unusable_password()
            bot.save()
            Membership.objects.create(user=bot, team=team, role=role)
            AccessToken.objects.filter(pk=token.pk).update(user=bot)
            token.user = bot
        owner = f"team {team}" if team is not None else actor.username
        audit(action="api_token.create", summary=f"created API token {token.name!r} of {owner} ({', '.join(scopes)})",
              actor=actor, team=team, obj=token, request=request,
              detail={"scopes": scopes, "expires_at": expires_at.isoformat() if expires_at else None})
    return token, secret


def team_token_role(scopes):
    """The one role a team token with these scopes acts with, or None when no role short of admin holds them all."""
    wanted = set(scopes) - {Scope.READ}
    if not wanted:
        return Role.VIEWER
    if wanted <= {Scope.BUILD, Scope.PROMOTE}:
        return Role.DEVELOPER
    if wanted == {Scope.OPERATE}:
        return Role.OPERATOR
    return None


def _some_team_requires_second_factor(user):
    return Team.objects.filter(memberships__user=user, require_two_factor=True).exists() or (
        user.is_superuser and Team.objects.filter(require_two_factor=True).exists())


def token_revoke(*, token, actor, request=None):
    """Revoke a token at once. Its owner may (a team token itself, through the API); so may a team admin for a team
    token."""
    if token.is_team_token and actor.pk != token.user_id:
        check_team_action(actor, token.team, Action.ADMIN)
    elif token.user_id != actor.pk and not actor.is_superuser:
        raise PermissionDenied("Only its owner may revoke a personal token.")
    with transaction.atomic():
        changed = AccessToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if changed and token.is_team_token:  # its own user goes with it
            Membership.objects.filter(user_id=token.user_id).delete()
            User.objects.filter(pk=token.user_id).update(is_active=False)
        if changed:
            audit(action="api_token.revoke", summary=f"revoked API token {token.name!r}", actor=actor,
                  team=token.team, obj=token, request=request)
    token.refresh_from_db()
    return token


def token_authenticate(secret, *, request=None):
    """The usable token with this secret, or None. Its last use (time and address) is noted every time, and written to
    the audit trail at most once per API_TOKEN_AUDIT_USE_SECONDS, so the trail shows who used which token without a
    row per request."""
    if not secret or not secret.startswith(AccessToken.PREFIX) or len(secret) > 200 or not secret.isascii():
        return None
    now = timezone.now()
    token = (AccessToken.objects.usable(now).select_related("user", "team")
             .filter(token_hash=AccessToken.hash_secret(secret)).first())
    if token is None or (token.user is not None and not token.user.is_active):
        return None
    address = client_ip(request)
    audit_due = token.last_used_at is None or (now - token.last_used_at).total_seconds() >= settings.API_TOKEN_AUDIT_USE_SECONDS
    AccessToken.objects.filter(pk=token.pk).update(last_used_at=now, last_used_ip=address)
    if audit_due:
        audit(action="api_token.use", summary=f"used API token {token.name!r}", actor=token.user, team=token.team,
              obj=token, request=request, actor_name=f"token {token.name}",
              detail={"method": request.method if request else "", "path": request.path if request else ""})
    token.last_used_at, token.last_used_ip = now, address
    return token
