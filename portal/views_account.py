"""Signing in and out, the password, and the second factor (an authenticator app and backup codes; a team may require
it of its approvers and admins): each success and failure audited. The login throttling is portal/login.py, the codes
and devices portal/twofactor.py."""

import time
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from django_otp import login as otp_login
from django_otp.plugins.otp_static.models import StaticDevice

from . import login, registry, services, tokens, twofactor
from .access import can, get_team_for_user
from .forms import AccessTokenForm, LoginForm, SecondFactorForm
from .models import AccessToken, Action, User
from .views import error_text

# --- Authentication --------------------------------------------------------------------------------------------------


# A password accepted for a user with a second factor waits here (in the not yet signed-in session) for the code.
PENDING_LOGIN = "portal_pending_login"
PENDING_LOGIN_SECONDS = 300
# The secret of an authenticator app being set up, until the user confirms it with a code.
ENROLL_SECRET = "portal_two_factor_secret"


class LoginView(auth_views.LoginView):
    """Django's login, audited: every success and every failure lands in the audit trail. A user with a second factor
    is signed in only after its code (`login_verify`); one whose team requires it and has none is sent to set it up."""

    form_class = LoginForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        """The "Sign in with ..." button, only when single sign-on is configured (portal.sso)."""
        return {**super().get_context_data(**kwargs), "sso_enabled": settings.SSO_ENABLED,
                "sso_provider_name": settings.SSO_PROVIDER_NAME}

    def get_default_redirect_url(self):
        """With no page asked for (?next=), the page that is the user's job (`portal.registry.landing`), else the
        dashboard."""
        user = getattr(self, "signing_in", None) or self.request.user
        return (registry.landing_url(user) if user.is_authenticated else None) or super().get_default_redirect_url()

    def form_valid(self, form):
        user = form.get_user()
        self.signing_in = user
        if twofactor.has_second_factor(user):
            self.request.session[PENDING_LOGIN] = {"user": user.pk, "backend": user.backend, "at": int(time.time()),
                                                   "next": self.get_success_url()}
            return redirect("portal:login_verify")
        response = super().form_valid(form)
        services.audit(action="auth.login", summary=f"{user.username} logged in", actor=user, request=self.request)
        if twofactor.teams_requiring(user):
            response = redirect("portal:two_factor")  # the page says which teams ask for it, and why
        return login.remember_browser(self.request, response, user.get_username())

    def form_invalid(self, form):
        username = (form.data.get("username") or "")[:150]
        services.audit(action="auth.login_failed", summary=f"failed login as {username or '(no username)'}",
                       actor_name=username, request=self.request)
        return super().form_invalid(form)


@never_cache
def login_verify(request):
    """The second step of signing in: a code from the authenticator app, or a backup code."""
    pending = request.session.get(PENDING_LOGIN)
    user = None
    if isinstance(pending, dict) and time.time() - pending.get("at", 0) <= PENDING_LOGIN_SECONDS:
        user = User.objects.filter(pk=pending.get("user"), is_active=True).first()
    if user is None:
        request.session.pop(PENDING_LOGIN, None)
        messages.info(request, "Sign in with your password first (a code must follow it within five minutes).")
        return redirect("portal:login")
    form = SecondFactorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            device = twofactor.two_factor_verify(user=user, token=form.cleaned_data["code"], request=request)
        except ValidationError as exc:
            form.add_error("code", exc)
        else:
            del request.session[PENDING_LOGIN]
            auth_login(request, user, backend=pending["backend"])
            otp_login(request, device)
            services.audit(action="auth.login", summary=f"{user.username} logged in with a second factor", actor=user,
                           request=request)
            if isinstance(device, StaticDevice):
                messages.warning(request, f"You signed in with a backup code; {twofactor.backup_codes_left(user)} "
                                          "are left. Each works once: make new ones on your two-factor page.")
            response = redirect(pending.get("next") or settings.LOGIN_REDIRECT_URL)
            return login.remember_browser(request, response, user.get_username())
    return render(request, "registration/login_verify.html", {"form": form, "pending_username": user.username})


class PasswordChangeView(auth_views.PasswordChangeView):
    def form_valid(self, form):
        response = super().form_valid(form)
        services.audit(action="auth.password_change", summary=f"{self.request.user.username} changed their password",
                       actor=self.request.user, request=self.request)
        messages.success(self.request, "Your password was changed.")
        return response


def logout_view(request):
    """POST logs out (GET shows a button, so a link cannot log anyone out)."""
    if request.method == "POST":
        if request.user.is_authenticated:
            services.audit(action="auth.logout", summary=f"{request.user.username} logged out", actor=request.user,
                           request=request)
        return auth_views.LogoutView.as_view()(request)
    return render(request, "registration/logout_confirm.html")


# --- Second factor ---------------------------------------------------------------------------------------------------


@login_required
@never_cache
def two_factor(request):
    """The user's second factor: set up an authenticator app (a QR code drawn here, no outside service), or see it and
    its backup codes. Setting one up replaces the old one, so it needs this sign-in verified if one exists."""
    user = request.user
    device = twofactor.app_device(user)
    verified = twofactor.is_verified(user)
    if request.method == "POST" and device is not None and not verified:
        return HttpResponseRedirect(reverse("portal:two_factor"))
    form = SecondFactorForm(request.POST or None, setting_up=True)
    codes = None
    if request.method == "POST" and form.is_valid():
        try:
            codes = twofactor.two_factor_enroll(user=user, key_hex=request.session.get(ENROLL_SECRET, ""),
                                               token=form.cleaned_data["code"], request=request)
        except ValidationError as exc:
            form.add_error("code", exc)
        else:
            del request.session[ENROLL_SECRET]
            device = twofactor.app_device(user)
            otp_login(request, device)
            verified = True
    context = {
        "device": device, "verified": verified, "codes": codes, "form": form,
        "codes_left": twofactor.backup_codes_left(user), "requiring": twofactor.teams_requiring(user),
        "setting_up": codes is None and (device is None or (verified and request.GET.get("replace") == "1")),
    }
    if context["setting_up"]:
        if ENROLL_SECRET not in request.session:
            request.session[ENROLL_SECRET] = twofactor.new_secret()
        secret = request.session[ENROLL_SECRET]
        context.update({"secret": twofactor.secret_for_people(secret),
                        "qr_svg": twofactor.qr_svg(twofactor.provisioning_uri(user, secret))})
    return render(request, "portal/two_factor.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def two_factor_verify(request):
    """Verify this sign-in with a code (a session signed in before the second factor was set up elsewhere)."""
    form = SecondFactorForm(request.POST)
    if form.is_valid():
        try:
            device = twofactor.two_factor_verify(user=request.user, token=form.cleaned_data["code"], request=request)
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        else:
            otp_login(request, device)
            messages.success(request, "This sign-in is verified with your second factor.")
    else:
        messages.error(request, "Type the six digits your app shows, or a backup code.")
    return redirect("portal:two_factor")


@login_required
@require_POST
def two_factor_backup_codes(request):
    if not twofactor.is_verified(request.user):
        raise PermissionDenied("Verify this sign-in with your second factor first.")
    try:
        codes = twofactor.two_factor_backup_codes_renew(user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect("portal:two_factor")
    return render(request, "portal/two_factor.html", {
        "device": twofactor.app_device(request.user), "verified": True, "codes": codes, "setting_up": False,
        "codes_left": len(codes), "requiring": twofactor.teams_requiring(request.user), "form": SecondFactorForm()})


@login_required
@require_POST
def two_factor_remove(request):
    if not twofactor.is_verified(request.user):
        raise PermissionDenied("Verify this sign-in with your second factor first.")
    twofactor.two_factor_remove(user=request.user, actor=request.user, request=request)
    requiring = twofactor.teams_requiring(request.user)
    if requiring:
        messages.warning(request, f"Your second factor is removed. {', '.join(t.name for t in requiring)} requires one: "
                                  "until you set one up again you cannot approve or administer there.")
    else:
        messages.success(request, "Your second factor is removed: signing in asks for your password only.")
    return redirect("portal:two_factor")


@login_required
@require_POST
def team_two_factor(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    required = request.POST.get("required") == "on"
    try:
        twofactor.team_set_two_factor(team=team, required=required, actor=request.user, request=request)
    except PermissionDenied as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"{team} {'now requires' if required else 'no longer requires'} a second factor of "
                                  "its approvers and admins.")
    return redirect(team)


# --- API tokens ------------------------------------------------------------------------------------------------------


def _token_form_post(request, *, team=None):
    """Make a token from the posted form; returns (form, token, secret) with token and secret None when refused."""
    form = AccessTokenForm(request.POST, team=team)
    if not form.is_valid():
        return form, None, None
    user = request.user
    verified = bool(getattr(user, "is_verified", lambda: False)())
    try:
        token, secret = tokens.token_create(
            actor=user, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], team=team,
            expires_at=timezone.now() + timedelta(days=form.cleaned_data["expires_in_days"]), verified=verified,
            request=request)
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return form, None, None
    return form, token, secret


@login_required
@never_cache
def api_tokens(request):
    """The user's own API tokens: make one (its secret shown once, on this response only), see when each was last used,
    revoke."""
    form, new_token, new_secret = AccessTokenForm(), None, None
    status = 200
    if request.method == "POST":
        form, new_token, new_secret = _token_form_post(request)
        status = 200 if new_token else 400
        if new_token:
            form = AccessTokenForm()
    tokens = AccessToken.objects.filter(user=request.user).order_by("-created_at")
    return render(request, "portal/api_tokens.html", {
        "form": form, "tokens": tokens, "new_token": new_token, "new_secret": new_secret, "team": None,
        "approve_needs_second_factor": bool(twofactor.teams_requiring(request.user)),
        "approve_hours": settings.API_TOKEN_APPROVE_MAX_HOURS,
        "docs_url": reverse("portal:api_docs"),
    }, status=status)


@login_required
@never_cache
def team_api_tokens(request, slug):
    """A team's API tokens, for its admins: tokens that act in this team only, for pipelines that outlive a person."""
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form, new_token, new_secret = AccessTokenForm(team=team), None, None
    status = 200
    if request.method == "POST":
        form, new_token, new_secret = _token_form_post(request, team=team)
        status = 200 if new_token else 400
        if new_token:
            form = AccessTokenForm(team=team)
    tokens = AccessToken.objects.filter(team=team).select_related("user", "created_by").order_by("-created_at")
    return render(request, "portal/api_tokens.html", {
        "form": form, "tokens": tokens, "new_token": new_token, "new_secret": new_secret, "team": team,
        "docs_url": reverse("portal:api_docs"),
    }, status=status)


@login_required
@require_POST
def api_token_revoke(request, pk):
    """Revoke a token: the user's own, or (team admins) one of their team's."""
    token = AccessToken.objects.select_related("team").filter(pk=pk).first()
    if token is None or (token.is_team_token and not can(request.user, token.team, Action.VIEW)) or (
            not token.is_team_token and token.user_id != request.user.pk):
        raise Http404("No such token.")
    tokens.token_revoke(token=token, actor=request.user, request=request)
    messages.success(request, f"Token {token.name} revoked: it no longer works.")
    if token.is_team_token:
        return redirect("portal:team_api_tokens", slug=token.team.slug)
    return redirect("portal:api_tokens")
