"""The REST API at /api/v1/ (django-ninja): the one API instance, its token authentication, and what every operation
shares: RFC 9457 problem documents for every error, cursor pagination, and ETags on reads. docs/api.md is the user's
guide.

Each feature app writes its own ninja `Router` in `<app>/api.py` and registers it in its `AppConfig.ready()` with
`portal.registry.api_router(prefix, router, order=...)`; `mount()` adds them here when the URLconf loads, so the core
imports no feature. Routers call the same access helpers and services as the views: the API never writes a row itself.

Authentication is a bearer token only (`portal.models.AccessToken`), never the session cookie, so no request here needs a
CSRF token. A route names the scope it needs with `auth=token_auth("build")` (reads default to "read"); the scope is a
ceiling, the role check is still the access helper's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponseNotModified
from django.urls import URLResolver
from django.urls.resolvers import RegexPattern
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import HttpBearer
from pydantic import ConfigDict, create_model

from . import ratelimit, registry, tokens
from .clientip import throttle_address

log = logging.getLogger(__name__)

PROBLEM_TYPE = "urn:image-mode-portal:problem:"  # + a slug docs/api.md lists; a name, not a page to fetch
PAGE_LIMIT_DEFAULT = 50
PAGE_LIMIT_MAX = 200


# --- Problems (RFC 9457) ---------------------------------------------------------------------------------------------


class Problem(Exception):
    """Raise anywhere in an operation: answered as a problem document with `status`, `detail` and any extension
    members (`missing_scope=...`, `errors=[...]`)."""

    def __init__(self, status: int, detail: str, *, slug: str = "", headers: dict | None = None, **extensions):
        super().__init__(detail)
        self.status, self.detail, self.slug = status, detail, slug
        self.headers = headers or {}
        self.extensions = extensions


class MissingScope(Problem):
    def __init__(self, scope: str):
        scope = str(scope)
        super().__init__(403, f"This token lacks the scope {scope!r}. Make a token with it on your API tokens page.",
                         slug="missing-scope", missing_scope=scope)


def problem_response(request, status: int, detail: str, *, slug: str = "", headers: dict | None = None, **extensions):
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = {"type": PROBLEM_TYPE + slug if slug else "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.path, **extensions}
    response = api.create_response(request, body, status=status)
    response["Content-Type"] = "application/problem+json"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# --- The API ---------------------------------------------------------------------------------------------------------


# Every operation may answer these, as problem documents; the schema says so once for all (portal.api.PortalAPI).
ERROR_RESPONSES = {
    400: "Bad input: `errors` names each field (body.x, query.x).",
    401: "No token, or an unknown, expired or revoked one.",
    403: "The token lacks a scope (`missing_scope`), or the role does not allow it.",
    404: "No such object, or one of a team the caller does not belong to (the same answer).",
    409: "The object's state does not allow it now (already ended, still running, exists already).",
    429: "Over the rate limit: `Retry-After` says when to try again.",
}
PROBLEM_SCHEMA = {
    "type": "object",
    "title": "Problem",
    "description": "An RFC 9457 problem document (application/problem+json).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["field", "message"], "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}}}},
        "missing_scope": {"type": "string"}, "retry_after": {"type": "integer"},
    },
}


class PortalAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        """Ninja's schema, with the problem documents every operation may answer and the bearer token described."""
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path in schema["paths"].values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                for status, description in ERROR_RESPONSES.items():
                    responses.setdefault(status, {"description": description, "content": problem})
        for scheme in schema["components"].get("securitySchemes", {}).values():
            scheme["description"] = "An API token (impt_...), made on the API tokens page of your account or team."
        return schema

    def create_response(self, request, data, *args, status=200, temporal_response=None, **kwargs):
        """Every successful read carries a strong ETag of its body; `If-None-Match` with it answers 304."""
        response = super().create_response(request, data, *args, status=status, temporal_response=temporal_response,
                                           **kwargs)
        if request.method in ("GET", "HEAD") and response.status_code == 200:
            etag = '"' + hashlib.sha256(response.content).hexdigest()[:32] + '"'
            response["ETag"] = etag
            response["Cache-Control"] = "private, no-cache"
            wanted = [tag.strip().removeprefix("W/") for tag in request.headers.get("If-None-Match", "").split(",")]
            if etag in wanted or "*" in wanted:
                not_modified = HttpResponseNotModified()
                not_modified["ETag"] = etag
                return not_modified
        return response


class TokenAuth(HttpBearer):
    """Bearer token auth for one scope. Rate limited per client address and per token (`portal.ratelimit`) before the
    token is even looked up: 429 with Retry-After over the limit."""

    def __init__(self, scope: str):
        super().__init__()
        self.scope = str(scope)

    def __call__(self, request):
        _rate_limit(request)
        _refuse_nul(request)
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        return self.authenticate(request, secret.strip())

    def authenticate(self, request, token):
        found = tokens.token_authenticate(token, request=request)
        if found is None:
            return None
        user = found.user
        # A token made in a sign-in verified with a second factor counts as one (portal.access.second_factor_refusal).
        user.is_verified = lambda: found.two_factor
        request.user = user
        if self.scope not in found.scopes:
            raise MissingScope(self.scope)
        return found


def require_scope(request, scope: str) -> None:
    """For operations whose scope depends on the object (cancelling a host action needs operate, a build build)."""
    if scope not in request.auth.scopes:
        raise MissingScope(scope)


_auths: dict[str, TokenAuth] = {}


def token_auth(scope: str) -> TokenAuth:
    """The auth of an operation that needs `scope` (one of portal.models.Scope)."""
    if scope not in _auths:
        _auths[scope] = TokenAuth(scope)
    return _auths[scope]


def _refuse_nul(request):
    """PostgreSQL text cannot hold a NUL character, so no name, search or key of the portal has one: a request that sends
    one gets a 400 naming where, before any lookup tries (and fails) to compare it."""
    where = None
    if "\x00" in request.path:
        where = "path"
    else:
        where = next((f"query.{key}" for key, values in request.GET.lists()
                      if "\x00" in key or any("\x00" in value for value in values)), None)
    if where is None and (b"\x00" in request.body or b"\\u0000" in request.body):
        where = "body"
    if where is not None:
        raise Problem(400, f"{where}: holds a NUL character", slug="invalid",
                      errors=[{"field": where, "message": "holds a NUL character"}])


def _rate_limit(request):
    secret = request.headers.get("Authorization", "").partition(" ")[2].strip()
    checks = [("address", throttle_address(request) or "unknown", "API_RATE_LIMIT_PER_ADDRESS", "from one address")]
    if secret:
        checks.append(("key", ratelimit.digest(secret), "API_RATE_LIMIT_PER_TOKEN", "per token"))
    for kind, identity, setting, who in checks:
        rate = ratelimit.parse_rate(getattr(settings, setting))
        wait = ratelimit.hit(f"api:{kind}", identity, rate)
        if wait:
            raise Problem(429, f"Too many requests: at most {rate} {who}. Retry in {wait} s.", slug="rate-limited",
                          headers={"Retry-After": str(wait)}, retry_after=wait)


api = PortalAPI(
    title="Image Mode Portal API",
    version="1",
    description="Everything the portal's pages show and do, for pipelines and scripts. Authenticate with "
                "`Authorization: Bearer impt_...` (make a token under Account → API tokens). Errors are RFC 9457 "
                "problem documents. See docs/api.md.",
    urls_namespace="api",
    auth=token_auth("read"),
    docs_url=None,
    openapi_url="/openapi.json",
)


class Body(Schema):
    """Base of every request body: a field the schema does not name is a 400 that names it, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- Errors ----------------------------------------------------------------------------------------------------------


# Parts of a pydantic error location that name a union's member type, not a field ("definition.int").
_TYPE_TAGS = {"int", "str", "float", "bool", "dict", "list", "none", "literal", "enum", "is-instance", "lax-or-strict",
              "json-or-python", "function-after", "function-before", "function-wrap", "nullable", "tagged-union"}


def _is_type_tag(part) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part)


@api.exception_handler(NinjaValidationError)
def _invalid(request, exc):
    errors = []
    for error in exc.errors:
        loc = list(error.get("loc", ()))
        # ninja puts the body under the parameter's name: body.payload.name -> body.name
        if len(loc) >= 2 and loc[0] == "body":
            loc = ["body", *loc[2:]] if len(loc) > 2 else ["body"]
        field = ".".join(str(part) for part in loc if not _is_type_tag(part)) or "body"
        message = error.get("msg", "is not valid")
        if error.get("type") == "extra_forbidden":
            message = "is not a field of this request"
        if all(seen["field"] != field for seen in errors):  # a union's members each report the same field
            errors.append({"field": field, "message": message})
    first = errors[0] if errors else {"field": "body", "message": "is not valid"}
    return problem_response(request, 400, f"{first['field']}: {first['message']}", slug="invalid", errors=errors)


@api.exception_handler(DjangoValidationError)
def _refused(request, exc):
    if hasattr(exc, "error_dict"):
        errors = [{"field": "body" if name == "__all__" else f"body.{name}", "message": " ".join(messages)}
                  for name, messages in exc.message_dict.items()]
    else:
        errors = [{"field": "body", "message": " ".join(exc.messages)}]
    first = errors[0]
    detail = first["message"] if first["field"] == "body" else f"{first['field']}: {first['message']}"
    return problem_response(request, 400, detail, slug="invalid", errors=errors)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return problem_response(request, 401, "Send an API token: 'Authorization: Bearer impt_...'. Make one on your API "
                                          "tokens page. This one is missing, unknown, expired or revoked.",
                            slug="unauthenticated", headers={"WWW-Authenticate": 'Bearer realm="image-mode-portal"'})


@api.exception_handler(Problem)
def _problem(request, exc):
    return problem_response(request, exc.status, exc.detail, slug=exc.slug, headers=exc.headers, **exc.extensions)


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return problem_response(request, 403, str(exc) or "Your role does not allow this.", slug="forbidden")


@api.exception_handler(Http404)
def _not_found(request, exc):
    return problem_response(request, 404, "No such object.", slug="not-found")


@api.exception_handler(HttpError)
def _http_error(request, exc):
    if exc.status_code == 400:  # ninja's own: a body that is not JSON
        message = "is not a JSON document of this request's shape"
        return problem_response(request, 400, f"body: {message}", slug="invalid",
                                errors=[{"field": "body", "message": message}])
    return problem_response(request, exc.status_code, str(exc))


@api.exception_handler(Exception)
def _unexpected(request, exc):
    log.exception("API %s %s failed", request.method, request.path)
    return problem_response(request, 500, "The portal failed to answer this request; the error is in its log.")


# --- Pagination ------------------------------------------------------------------------------------------------------


def page_of(schema):
    """The response schema of a list of `schema`: {"items": [...], "next": cursor or null}."""
    return create_model(f"{schema.__name__}Page", __base__=Schema, items=(list[schema], ...), next=(str | None, None))


def _cursor_decode(cursor: str) -> int:
    try:
        value = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
    except (ValueError, binascii.Error, UnicodeError):
        raise Problem(400, "cursor: not a cursor this API gave out", slug="invalid",
                      errors=[{"field": "query.cursor", "message": "not a cursor this API gave out"}]) from None
    return value


def _cursor_encode(pk: int) -> str:
    return base64.urlsafe_b64encode(str(pk).encode()).decode().rstrip("=")


def paginate(queryset, *, cursor: str | None, limit: int, key=None) -> dict[str, Any]:
    """One page of `queryset`, newest first by primary key: {"items": rows, "next": cursor of the next page or None}.
    Keyset pagination: a page is as quick on the thousandth page as on the first, and rows added meanwhile do not shift
    it. `key(row)` turns each row into what the schema reads (default: the row)."""
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise Problem(400, f"limit: between 1 and {PAGE_LIMIT_MAX}", slug="invalid",
                      errors=[{"field": "query.limit", "message": f"between 1 and {PAGE_LIMIT_MAX}"}])
    queryset = queryset.order_by("-pk")
    if cursor:
        queryset = queryset.filter(pk__lt=_cursor_decode(cursor))
    rows = list(queryset[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [key(row) for row in rows] if key else rows,
            "next": _cursor_encode(rows[-1].pk) if more and rows else None}


# --- Mounting the feature routers ------------------------------------------------------------------------------------

_mounted = False


def mount(core_routers):
    """Add the core's routers (`portal.api_views`) and every feature's registered router, once; returns the API's URL
    patterns, for portal/urls.py."""
    global _mounted
    if not _mounted:
        for prefix, router in [*core_routers, *((entry.prefix, entry.router) for entry in registry.api_routers())]:
            api.add_router(prefix, import_string(router) if isinstance(router, str) else router)
        _mounted = True
    return api.urls


@csrf_exempt  # a bearer-token API: a POST to a path it does not have is a 404 too, not a CSRF refusal
def not_found(request):
    """Any other path under /api/v1/ (an id that is not a number, a typo): a problem document, not the HTML 404 page."""
    return problem_response(request, 404, "No such path in this API: see /api/v1/openapi.json.", slug="not-found")


def dispatch(request):
    """Answer `request` with the API operation its path names. For builds' first JSON API, whose three endpoints share
    their paths with this API's: they answer their old `imp_` team tokens themselves and hand everything else here."""
    match = URLResolver(RegexPattern(r"^/api/v1/"), api.urls[0]).resolve(request.path_info)
    return match.func(request, *match.args, **match.kwargs)
