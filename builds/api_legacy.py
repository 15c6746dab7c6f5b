"""The first JSON API for CI pipelines (builds' per-team `imp_` tokens), kept for the pipelines that use it, and the
inbound git webhook (GitHub and GitLab push payloads).

The REST API (`portal.api`, builds' router in `builds.api`) now serves these paths too: a request with an old `imp_`
token is answered here, with the old shapes; any other (a new `impt_` token, or none) goes to the REST API
(`portal.api.dispatch`), so the paths belong to both without either shadowing the other.

Old API: `Authorization: Bearer imp_...`. A token acts in its own team with the developer's rights: other teams' objects
do not exist for it (404). A revoked one: 401.

    POST /api/v1/builds/            {"definition": "<team>/<name>" or id, "revision": N?, "platform": "linux/amd64"?}
    GET  /api/v1/builds/<id>/       the build's status, digest, timestamps and failure summary
    GET  /api/v1/definitions/       the team's definitions, with their current revision and latest build

Webhook: `POST /hooks/git/<key>/`. GitHub style is verified with `X-Hub-Signature-256` (HMAC-SHA256 of the body with
the shared secret), GitLab style with `X-Gitlab-Token` (the secret itself), both compared in constant time. A bad or
missing signature gets 403 and builds nothing.

Both are rate limited per token (or webhook) and per client address (`portal.ratelimit`, settings `API_RATE_LIMIT_*`
and `WEBHOOK_RATE_LIMIT_*`): over the limit, 429 with `Retry-After`.
"""

import hashlib
import hmac
import json
from functools import wraps

from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal import api as portal_api
from portal import ratelimit
from portal.text import storable

from . import integrations, services
from .models import ApiToken, Build, GitWebhook, ImageDefinition, Revision


def _error(status, message, **extra):
    return JsonResponse({"error": message, **extra}, status=status)


def _bearer(request):
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def _legacy(view):
    """Run `view` for old `imp_` tokens; hand every other request to the REST API at the same path."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not _bearer(request).startswith(ApiToken.PREFIX):
            return portal_api.dispatch(request)
        return view(request, *args, **kwargs)

    return wrapped


def _token(request):
    secret = _bearer(request)
    return integrations.api_token_authenticate(secret) if secret else None


def _token_identity(request, *args, **kwargs):
    """Who a request counts against for the per-token rate limit: the token it presents (valid or not)."""
    secret = _bearer(request)
    return ratelimit.digest(secret) if secret else None


def _webhook_identity(request, key):
    return ratelimit.digest(key)


api_rate_limited = ratelimit.rate_limited(
    "api", per_address="API_RATE_LIMIT_PER_ADDRESS", per_key="API_RATE_LIMIT_PER_TOKEN", key=_token_identity)
webhook_rate_limited = ratelimit.rate_limited(
    "webhook", per_address="WEBHOOK_RATE_LIMIT_PER_ADDRESS", per_key="WEBHOOK_RATE_LIMIT_PER_HOOK", key=_webhook_identity,
    key_name="webhook")


def _unauthorized():
    response = _error(401, "Send a team API token: 'Authorization: Bearer imp_...'. Team admins create them on the "
                           "team's integrations page.")
    response["WWW-Authenticate"] = 'Bearer realm="image-mode-portal"'
    return response


def build_json(request, build):
    run = build.run
    return {
        "id": build.pk,
        "url": request.build_absolute_uri(build.get_absolute_url()),
        "api_url": request.build_absolute_uri(reverse("builds:api_build_detail", args=[build.pk])),
        "definition": f"{build.definition.team.slug}/{build.definition.name}",
        "number": build.number,
        "revision": build.revision.number,
        "revision_sha256": build.revision.sha256,
        "platform": build.platform,
        "status": build.status,
        "phase": run.phase,
        "trigger": run.trigger,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "digest": build.digest or None,
        "image": build.image_ref or None,
        "tags": build.tags,
        "size": build.size,
        "architecture": build.architecture or None,
        "reason": run.exit_reason or None,
        "failed_step": build.failed_step or None,
        "hint": build.hint or None,
        "log_url": request.build_absolute_uri(reverse("portal:run_log_raw", args=[run.pk])),
    }


def _definition_for(token, value):
    qs = ImageDefinition.objects.filter(team=token.team).select_related("team")
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdecimal()
                                                                    and value.isascii()):
        return qs.filter(pk=int(value)).first()
    if isinstance(value, str) and "\x00" not in value:  # PostgreSQL text cannot hold NUL: no such name
        team_slug, _, name = value.rpartition("/")
        if team_slug and team_slug != token.team.slug:
            return None
        return qs.filter(name=name).first()
    return None


@csrf_exempt
@_legacy
@require_POST
@api_rate_limited
def build_create(request):
    token = _token(request)
    if token is None:
        return _unauthorized()
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "The body must be JSON, e.g. {\"definition\": \"platform/web-os\"}.")
    if not isinstance(payload, dict):
        return _error(400, "The body must be a JSON object.")
    definition = _definition_for(token, payload.get("definition"))
    if definition is None:
        return _error(404, f"No image definition {payload.get('definition')!r} in team {token.team.slug}.")
    revision_number = payload.get("revision")
    if revision_number is None:
        revision = definition.current_revision()
    elif isinstance(revision_number, int) and not isinstance(revision_number, bool):
        revision = Revision.objects.filter(definition=definition, number=revision_number).first()
    else:
        return _error(400, "'revision' must be a revision number.")
    if revision is None:
        return _error(404, "No such revision" if revision_number is not None else "The definition has no revision yet.")
    platform = payload.get("platform")
    if platform is not None and (not isinstance(platform, str) or platform not in definition.platforms):
        return _error(400, f"'platform' must be one of {definition.platforms}.")
    actor = f"API token {token.name!r}"
    try:
        if platform:
            builds = [services.build_start(revision=revision, user=None, trigger="api", platform=platform,
                                           actor_name=actor, request=request)]
        else:
            builds = services.build_start_all(revision=revision, user=None, trigger="api", actor_name=actor,
                                              request=request)
    except ValidationError as exc:
        return _error(400, " ".join(exc.messages))
    builds = [Build.objects.with_related().get(pk=b.pk) for b in builds]
    return JsonResponse({"builds": [build_json(request, b) for b in builds]}, status=201)


@csrf_exempt
@_legacy
@require_GET
@api_rate_limited
def build_detail(request, pk):
    token = _token(request)
    if token is None:
        return _unauthorized()
    build = Build.objects.with_related().filter(pk=pk, definition__team=token.team).first()
    if build is None:
        return _error(404, "No such build in this token's team.")
    return JsonResponse(build_json(request, build))


@csrf_exempt
@_legacy
@require_GET
@api_rate_limited
def definition_list(request):
    token = _token(request)
    if token is None:
        return _unauthorized()
    out = []
    for definition in ImageDefinition.objects.filter(team=token.team).with_latest_build().order_by("name"):
        revision = definition.current_revision()
        latest = Build.objects.with_related().filter(pk=definition.latest_build_id).first()
        out.append({
            "id": definition.pk, "name": definition.name, "repository": definition.repository,
            "platforms": definition.platforms, "current_revision": revision.number if revision else None,
            "latest_build": build_json(request, latest) if latest else None,
        })
    return JsonResponse({"team": token.team.slug, "definitions": out})


# --- Git webhook -----------------------------------------------------------------------------------------------------


SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Gitlab-Token")


def _signature_problem(request, hook):
    """Why the request does not carry this webhook's signature, or None when it does.

    GitHub signs the body with HMAC-SHA256 (`X-Hub-Signature-256: sha256=<hex>`); GitLab sends the secret itself
    (`X-Gitlab-Token`). Either value is ASCII: anything else is refused by name before comparing (`compare_digest`
    takes only ASCII text)."""
    for header in SIGNATURE_HEADERS:
        value = request.headers.get(header, "")
        if value and not value.isascii():
            return f"The {header} header holds a character that is not ASCII: nothing was built."
    secret = hook.secret.encode()
    github = request.headers.get("X-Hub-Signature-256", "")
    if github:
        expected = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
        matches = hmac.compare_digest(github.strip(), expected)
    else:
        gitlab = request.headers.get("X-Gitlab-Token", "")
        matches = bool(gitlab) and hmac.compare_digest(gitlab.encode(), secret)
    return None if matches else "The signature does not match this webhook's secret: nothing was built."


def _push_facts(payload):
    """(repository URLs, branch, commit) from a GitHub or GitLab push payload; branch None if not a branch push.
    Any NUL in the payload's text reads as U+FFFD: these values reach the database."""
    payload = storable(payload)
    ref = payload.get("ref")
    ref = ref if isinstance(ref, str) else ""
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    urls = []
    for section in ("repository", "project"):
        data = payload.get(section)
        if isinstance(data, dict):
            urls += [data.get(k) for k in ("clone_url", "ssh_url", "git_url", "html_url", "url", "git_http_url",
                                           "git_ssh_url", "web_url", "homepage")]
    urls = [u for u in urls if isinstance(u, str) and u]
    commit = payload.get("after") or payload.get("checkout_sha") or ""
    return urls, branch, commit if isinstance(commit, str) else ""


@csrf_exempt
@require_http_methods(["POST"])
@webhook_rate_limited
def git_webhook(request, key):
    hook = GitWebhook.objects.select_related("team").filter(key=key).first()
    if hook is None:
        return _error(404, "No such webhook.")
    problem = _signature_problem(request, hook)
    if problem:
        return _error(403, problem)
    event = request.headers.get("X-GitHub-Event") or request.headers.get("X-Gitlab-Event") or ""
    if event == "ping":
        return JsonResponse({"ok": True, "pong": True})
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "The body must be JSON (GitHub: content type application/json).")
    if not isinstance(payload, dict):
        return _error(400, "The body must be a JSON object.")
    urls, branch, commit = _push_facts(payload)
    if branch is None:
        return JsonResponse({"ok": True, "builds": [], "detail": "not a branch push: ignored"}, status=202)
    if set(commit) == {"0"}:
        return JsonResponse({"ok": True, "builds": [], "detail": "branch deleted: ignored"}, status=202)
    builds = integrations.webhook_push_received(hook=hook, repository_urls=urls, branch=branch, commit=commit,
                                            request=request)
    return JsonResponse({"ok": True, "builds": [b.pk for b in builds]}, status=202)
