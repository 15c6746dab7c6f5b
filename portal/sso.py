"""Single sign-on with OpenID Connect (mozilla-django-oidc), beside local accounts (docs/sso.md).

mozilla-django-oidc rather than django-allauth: the portal keeps its own login page, throttling (portal.login) and
second factor (portal.twofactor); this adds one button and two views to that flow instead of replacing it.

- **Who is who**: the provider's account is tied to a portal user by its `sub` claim (`User.oidc_subject`), never by
  name or email, so a provider account can never sign in as a local one (the break-glass admin). The first sign-in
  makes the user (`services.sso_user_provision`), named by OIDC_USERNAME_CLAIM; a name a local account holds is
  refused with a message.
- **Groups to roles**: the groups claim (OIDC_GROUPS_CLAIM, from the ID token or the userinfo answer) is mapped to
  {team: role} by OIDC_GROUP_MAPPING and the admin site's identity group mappings; at every sign-in the memberships
  the provider gave are made to match (`services.sso_memberships_sync`), audited; those a team admin gave by hand stay.
  A user in several groups for one team gets the strongest role (admin, approver, operator, developer, viewer).
- **Second factor**: a user who set up the portal's own second factor is asked for its code after the provider, as
  after a password.
- **Provider down or wrong**: every failure (unreachable, an error answer, a bad token, a refused account) lands back on
  the login page with a message saying what happened; local accounts still sign in.
"""

from __future__ import annotations

import logging
import time

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.http import Http404
from django.shortcuts import redirect
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from . import login, registry, services, twofactor
from .models import IdentityGroupMapping, Role, Team, User
from .views_account import PENDING_LOGIN  # the password login's own pending second-factor step

log = logging.getLogger(__name__)

BACKEND = "portal.sso.PortalOIDCBackend"
# How long the login button waits for the provider's keys before saying it does not answer.
PROBE_SECONDS = 5
# The strongest role wins when several groups give one team a role.
ROLE_STRENGTH = [Role.ADMIN, Role.APPROVER, Role.OPERATOR, Role.DEVELOPER, Role.VIEWER]


class SignInRefused(Exception):
    """Why an identity provider's sign-in was refused, in words for the login page."""


def mapping_entries() -> list[tuple[str, str, str]]:
    """(group, team slug, role) from the settings and the admin site."""
    rows = IdentityGroupMapping.objects.select_related("team").values_list("group", "team__slug", "role")
    return list(settings.OIDC_GROUP_MAPPING) + list(rows)


def wanted_roles(groups: list[str]) -> dict[Team, str]:
    """{team: role} that `groups` give, the strongest role per team; teams that do not exist are skipped (logged)."""
    best: dict[str, str] = {}
    member_of = set(groups)
    for group, slug, role in mapping_entries():
        if group in member_of and (slug not in best or ROLE_STRENGTH.index(role) < ROLE_STRENGTH.index(best[slug])):
            best[slug] = role
    teams = Team.objects.in_bulk(list(best), field_name="slug")
    for slug in set(best) - set(teams):
        log.warning("OIDC group mapping names the team %r, which does not exist", slug)
    return {teams[slug]: role for slug, role in best.items() if slug in teams}


def groups_of(claims: dict) -> list[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    return [str(group) for group in value if isinstance(group, (str, int))][:500]


class PortalOIDCBackend(OIDCAuthenticationBackend):
    """Users by the provider's `sub`; provisioned at the first sign-in; roles from groups at every sign-in."""

    def get_userinfo(self, access_token, id_token, payload):
        claims = dict(super().get_userinfo(access_token, id_token, payload))
        if claims.get("sub") != payload.get("sub"):
            raise SignInRefused("The identity provider's user information is about another account than its token.")
        if settings.OIDC_GROUPS_CLAIM not in claims and settings.OIDC_GROUPS_CLAIM in payload:
            claims[settings.OIDC_GROUPS_CLAIM] = payload[settings.OIDC_GROUPS_CLAIM]  # Entra puts groups in the token
        return claims

    def verify_claims(self, claims):
        if not claims.get("sub"):
            raise SignInRefused("The identity provider sent no subject (sub) for the account.")
        return True

    def filter_users_by_claims(self, claims):
        return User.objects.filter(oidc_subject=str(claims["sub"]))

    def create_user(self, claims):
        username = claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email") or ""
        try:
            user = services.sso_user_provision(
                subject=str(claims["sub"]), username=str(username), email=str(claims.get("email") or ""),
                first_name=str(claims.get("given_name") or ""), last_name=str(claims.get("family_name") or ""),
                request=self.request)
        except ValidationError as exc:
            raise SignInRefused(" ".join(exc.messages)) from None
        return self._apply_groups(user, claims)

    def update_user(self, user, claims):
        if not user.is_active:
            raise SignInRefused(f"The account {user.username} is deactivated in the portal.")
        email = str(claims.get("email") or "")[:254]
        if email and email != user.email:
            User.objects.filter(pk=user.pk).update(email=email)
            user.email = email
        return self._apply_groups(user, claims)

    def get_or_create_user(self, access_token, id_token, payload):
        user = super().get_or_create_user(access_token, id_token, payload)
        if user is None:
            raise SignInRefused("There is no portal account for this identity, and OIDC_CREATE_USER is off.")
        return user

    def _apply_groups(self, user, claims):
        groups = groups_of(claims)
        services.sso_memberships_sync(user=user, wanted=wanted_roles(groups), groups=groups, request=self.request)
        return user


def _refuse(request, reason):
    """Back to the login page with the reason; the failure is audited."""
    services.audit(action="auth.sso_failed", summary=f"single sign-on failed: {reason}", actor_name="(single sign-on)",
                   request=request)
    messages.error(request, f"Signing in with {settings.SSO_PROVIDER_NAME} did not work: {reason} Local accounts "
                            "can still sign in with their password.")
    return redirect("portal:login")


class SignInRequestView(OIDCAuthenticationRequestView):
    """The "Sign in with ..." button: checks the provider answers (a short request for its keys) before sending the
    browser there, so an outage is a message on the login page instead of a browser error page."""

    def get(self, request):
        try:
            timeout = min(settings.OIDC_TIMEOUT, PROBE_SECONDS)
            answer = requests.get(settings.OIDC_OP_JWKS_ENDPOINT, timeout=timeout)
            answer.raise_for_status()
        except requests.RequestException as exc:
            log.warning("identity provider unreachable: %s", exc)
            return _refuse(request, f"{settings.SSO_PROVIDER_NAME} does not answer right now: {_short(exc)}.")
        return super().get(request)


class SignInCallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back: the code is exchanged for tokens, the user found or made, the groups
    applied; then signed in (or asked for their second factor), or back to the login page saying why not."""

    def get(self, request):
        if request.GET.get("error"):
            super().get(request)  # forgets the state, signs nobody in
            reason = request.GET.get("error_description") or request.GET.get("error")
            return _refuse(request, f"{settings.SSO_PROVIDER_NAME} answered: {str(reason)[:200]}.")
        if "oidc_states" not in request.session or request.GET.get("state") not in request.session["oidc_states"]:
            return _refuse(request, "this sign-in was not started here, or it was already used. Please start again.")
        try:
            return super().get(request)
        except SignInRefused as exc:
            return _refuse(request, str(exc))
        except requests.RequestException as exc:
            log.warning("identity provider failed during sign-in: %s", exc)
            return _refuse(request, f"{settings.SSO_PROVIDER_NAME} did not answer as expected: {_short(exc)}.")
        except SuspiciousOperation as exc:
            log.warning("identity provider token refused: %s", exc)
            return _refuse(request, "the identity provider's token did not verify.")

    def login_failure(self):
        return _refuse(self.request, "the identity provider did not confirm who you are.")

    def login_success(self):
        user, request = self.user, self.request
        # ?next= given to the button (kept in the session by mozilla-django-oidc), else the user's landing page.
        next_url = request.session.get("oidc_login_next") or registry.landing_url(user) or self.success_url
        if twofactor.has_second_factor(user):

            request.session[PENDING_LOGIN] = {"user": user.pk, "backend": BACKEND, "at": int(time.time()),
                                              "next": next_url}
            return redirect("portal:login_verify")
        auth_login(request, user, backend=BACKEND)
        services.audit(action="auth.login", summary=f"{user.username} logged in with {settings.SSO_PROVIDER_NAME}",
                       actor=user, request=request)
        return login.remember_browser(request, redirect(next_url), user.get_username())


def _short(exc) -> str:
    """What went wrong with the provider, in a few words (requests' own messages are a screenful)."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {settings.OIDC_TIMEOUT} seconds"
    if isinstance(exc, requests.ConnectionError):
        return "the connection was refused or the address did not resolve"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"it answered HTTP {exc.response.status_code}"
    return type(exc).__name__


def sign_in_start(request):
    """The login page's "Sign in with ..." button (404 while single sign-on is not configured)."""
    if not settings.SSO_ENABLED:
        raise Http404("Single sign-on is not configured.")
    return SignInRequestView.as_view()(request)


def sign_in_callback(request):
    if not settings.SSO_ENABLED:
        raise Http404("Single sign-on is not configured.")
    return SignInCallbackView.as_view()(request)
