"""A team's build integrations page: its logins to registries and git hosts, its API tokens and its git webhooks (team
admins only). Every object comes through `builds.access`; every change through `builds.integrations`."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.access import get_team_for_user
from portal.forms import add_service_errors
from portal.models import Action

from . import integrations as services
from .access import get_api_token_for_user, get_git_credential_for_user, get_registry_credential_for_user, get_webhook_for_user
from .forms import ApiTokenForm, GitCredentialForm, RegistryCredentialForm
from .models import ApiToken, GitCredential, GitWebhook, RegistryCredential


@login_required
def integrations(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    return _render_integrations(request, team)


def _render_integrations(request, team, *, credential_form=None, token_form=None, new_token=None, new_webhook=None,
                         git_form=None, status=200):
    return render(request, "builds/integrations.html", {
        "team": team,
        "credentials": RegistryCredential.objects.filter(team=team),
        "git_credentials": GitCredential.objects.filter(team=team),
        "git_form": git_form or GitCredentialForm(team=team),
        "tokens": ApiToken.objects.filter(team=team).select_related("created_by"),
        "webhooks": GitWebhook.objects.filter(team=team),
        "credential_form": credential_form or RegistryCredentialForm(team=team),
        "token_form": token_form or ApiTokenForm(),
        "new_token": new_token, "new_webhook": new_webhook,
        "api_base": request.build_absolute_uri(reverse("builds:api_build_create")),
    }, status=status)


@login_required
@require_POST
def credential_create(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form = RegistryCredentialForm(request.POST, team=team)
    if not form.is_valid():
        return _render_integrations(request, team, credential_form=form, status=400)
    services.registry_credential_save(team=team, user=request.user, registry=form.cleaned_data["registry"],
                                      username=form.cleaned_data["username"], password=form.cleaned_data["password"],
                                      insecure=form.cleaned_data["insecure"], request=request)
    messages.success(request, f"Saved the login for {form.cleaned_data['registry']}.")
    return redirect("builds:integrations", slug=team.slug)


@login_required
@require_POST
def credential_delete(request, pk):
    credential = get_registry_credential_for_user(request.user, pk)
    services.registry_credential_delete(credential=credential, user=request.user, request=request)
    messages.success(request, f"Deleted the login for {credential.registry}.")
    return redirect("builds:integrations", slug=credential.team.slug)


@login_required
@require_POST
def git_credential_create(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form = GitCredentialForm(request.POST, team=team)
    if form.is_valid():
        try:
            services.git_credential_save(team=team, user=request.user, host=form.cleaned_data["host"],
                                         username=form.cleaned_data["username"].strip(),
                                         token=form.cleaned_data["token"], request=request)
        except ValidationError as exc:
            add_service_errors(form, exc)
    if form.errors:
        return _render_integrations(request, team, git_form=form, status=400)
    messages.success(request, f"Saved the git login for {form.cleaned_data['host']}: builds from it use it now.")
    return redirect("builds:integrations", slug=team.slug)


@login_required
@require_POST
def git_credential_delete(request, pk):
    credential = get_git_credential_for_user(request.user, pk)
    services.git_credential_delete(credential=credential, user=request.user, request=request)
    messages.success(request, f"Deleted the git login for {credential.host}.")
    return redirect("builds:integrations", slug=credential.team.slug)


@login_required
@require_POST
def token_create(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return _render_integrations(request, team, token_form=form, status=400)
    token, secret = services.api_token_create(team=team, user=request.user, name=form.cleaned_data["name"],
                                              request=request)
    return _render_integrations(request, team, new_token=(token, secret))


@login_required
@require_POST
def token_revoke(request, pk):
    token = get_api_token_for_user(request.user, pk)
    services.api_token_revoke(token=token, user=request.user, request=request)
    messages.success(request, f"Revoked the token {token.name}; calls with it now get 401.")
    return redirect("builds:integrations", slug=token.team.slug)


@login_required
@require_POST
def webhook_create(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    hook, secret = services.webhook_create(team=team, user=request.user, request=request)
    url = request.build_absolute_uri(reverse("builds:git_webhook", args=[hook.key]))
    return _render_integrations(request, team, new_webhook=(hook, secret, url))


@login_required
@require_POST
def webhook_delete(request, pk):
    hook = get_webhook_for_user(request.user, pk)
    services.webhook_delete(hook=hook, user=request.user, request=request)
    messages.success(request, "Deleted the webhook; pushes to its URL are refused from now on.")
    return redirect("builds:integrations", slug=hook.team.slug)
