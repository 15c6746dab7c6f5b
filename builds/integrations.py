"""Every state change of a team's build integrations, written once: its logins to registries and git hosts, its API
tokens, and its git webhooks with what a verified push starts. The views (`builds.views_integrations`), the JSON API
and the webhook endpoint (`builds.api_legacy`) call these; each checks access, writes and audits."""

from __future__ import annotations

import re
import secrets as pysecrets

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from portal.models import Action, Team, User
from portal.services import audit

from .models import ApiToken, Build, ContextKind, GitCredential, GitWebhook, ImageDefinition, RegistryCredential
from .services import _check, build_start_all

# --- Registry credentials --------------------------------------------------------------------------------------------


def registry_credential_save(*, team: Team, user: User | None, registry: str, username: str, password: str,
                             insecure: bool = False, request=None):
    """Add or replace the team's login to `registry`. An empty password keeps the stored one."""
    _check(user, team, Action.ADMIN)
    with transaction.atomic():
        credential = RegistryCredential.objects.select_for_update().filter(team=team, registry=registry).first()
        created = credential is None
        if created:
            credential = RegistryCredential(team=team, registry=registry, created_by=user)
        credential.username = username
        if password or created:
            credential.password = password
        credential.insecure = insecure
        credential.save()
        audit(action="registry_credential.save", summary=f"saved the {registry} login of {team} ({username or 'anonymous'})",
              actor=user, team=team, obj=credential, request=request,
              detail={"registry": registry, "username": username, "insecure": insecure,
                      "password_changed": bool(password)})
    return credential


def registry_credential_delete(*, credential, user: User | None, request=None):
    _check(user, credential.team, Action.ADMIN)
    with transaction.atomic():
        audit(action="registry_credential.delete", summary=f"deleted the {credential.registry} login of {credential.team}",
              actor=user, team=credential.team, obj=credential, request=request)
        credential.delete()


# --- Git logins ------------------------------------------------------------------------------------------------------


def git_credential_save(*, team: Team, user: User | None, host: str, username: str, token: str, request=None):
    """Add or replace the team's login to the git host `host` (host[:port]). An empty token keeps the stored one. The
    token never reaches the audit trail."""
    _check(user, team, Action.ADMIN)
    with transaction.atomic():
        credential = GitCredential.objects.select_for_update().filter(team=team, host=host).first()
        created = credential is None
        if created:
            if not token:
                raise ValidationError({"token": "Give the token (or password) git should log in with."})
            credential = GitCredential(team=team, host=host, created_by=user)
        credential.username = username
        if token:
            credential.token = token
        credential.save()
        audit(action="git_credential.save", summary=f"saved the git login for {host} of {team} "
                                                    f"({username or 'token as user name'})",
              actor=user, team=team, obj=credential, request=request,
              detail={"host": host, "username": username, "token_changed": bool(token)})
    return credential


def git_credential_delete(*, credential, user: User | None, request=None):
    _check(user, credential.team, Action.ADMIN)
    with transaction.atomic():
        audit(action="git_credential.delete", summary=f"deleted the git login for {credential.host} of "
                                                      f"{credential.team}",
              actor=user, team=credential.team, obj=credential, request=request)
        credential.delete()


# --- API tokens and webhooks -----------------------------------------------------------------------------------------


def api_token_create(*, team: Team, user: User | None, name: str, request=None):
    """A new token for CI; returns (token row, the secret shown once)."""
    _check(user, team, Action.ADMIN)
    secret = ApiToken.generate()
    with transaction.atomic():
        token = ApiToken.objects.create(team=team, name=name, token_hash=ApiToken.hash_secret(secret),
                                        hint=secret[:10], created_by=user)
        audit(action="api_token.create", summary=f"created API token {name!r} for {team}", actor=user, team=team,
              obj=token, request=request)
    return token, secret


def api_token_revoke(*, token, user: User | None, request=None):
    _check(user, token.team, Action.ADMIN)
    with transaction.atomic():
        type(token).objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        audit(action="api_token.revoke", summary=f"revoked API token {token.name!r} of {token.team}", actor=user,
              team=token.team, obj=token, request=request)


def api_token_authenticate(secret: str):
    """The active token with this secret (and its last use noted), or None."""
    if not secret or not secret.startswith(ApiToken.PREFIX):
        return None
    token = ApiToken.objects.select_related("team").filter(token_hash=ApiToken.hash_secret(secret),
                                                           revoked_at__isnull=True).first()
    if token is not None:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token


def webhook_create(*, team: Team, user: User | None, request=None):
    """A new git webhook endpoint; returns (hook, the shared secret shown once)."""
    _check(user, team, Action.ADMIN)
    secret = pysecrets.token_urlsafe(32)
    with transaction.atomic():
        hook = GitWebhook.objects.create(team=team, key=pysecrets.token_urlsafe(32)[:43], secret=secret, created_by=user)
        audit(action="webhook.create", summary=f"created a git webhook for {team}", actor=user, team=team, obj=hook,
              request=request)
    return hook, secret


def webhook_delete(*, hook, user: User | None, request=None):
    _check(user, hook.team, Action.ADMIN)
    with transaction.atomic():
        audit(action="webhook.delete", summary=f"deleted a git webhook of {hook.team}", actor=user, team=hook.team,
              obj=hook, request=request)
        hook.delete()


def normalize_git_url(url: str) -> str:
    """Compare repository URLs loosely: no scheme, no user, no trailing .git or slash, lower-case host."""
    url = url.strip()
    url = re.sub(r"^[a-z+]+://", "", url)
    url = re.sub(r"^[^@/]+@", "", url)
    url = url.replace(":", "/", 1) if re.match(r"^[^/]+:[^0-9]", url) else url
    url = url.removesuffix("/").removesuffix(".git")
    host, _, path = url.partition("/")
    return f"{host.lower()}/{path}"


def webhook_push_received(*, hook, repository_urls: list[str], branch: str, commit: str = "", request=None) -> list[Build]:
    """A verified push to `branch` of one repository: rebuild the team's definitions whose current revision builds
    from that repository and branch. Returns the builds started (one per platform)."""

    wanted = {normalize_git_url(u) for u in repository_urls if u}
    started = []
    matched = []
    for definition in ImageDefinition.objects.filter(team=hook.team).order_by("pk"):
        revision = definition.current_revision()
        if (revision is None or revision.context_kind != ContextKind.GIT
                or normalize_git_url(revision.git_url) not in wanted or (revision.git_ref or "main") != branch):
            continue
        matched.append(definition)
        if definition.builds.active().filter(revision=revision).exists():
            continue  # already building this revision: the queued build will fetch the new commit anyway
        started += build_start_all(revision=revision, user=None, trigger="webhook",
                                   actor_name=f"webhook ({branch}@{commit[:12]})" if commit else "webhook",
                                   request=request)
    summary = (f"push to {branch} ({commit[:12] or 'no commit'}): " +
               (f"started {len(started)} build(s) of {', '.join(d.name for d in matched)}" if started else
                "matched " + (", ".join(d.name for d in matched) + " (already building)" if matched else "no definition")))
    GitWebhook.objects.filter(pk=hook.pk).update(last_delivery_at=timezone.now(), last_delivery_summary=summary[:500])
    return started
