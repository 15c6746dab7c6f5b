"""Who is at the other end of a websocket: the signed-in session's user (Channels' AuthMiddlewareStack), or, when the
handshake carries `Authorization: Bearer impt_...`, the user of that API token (the CLI's `runs follow`,
`build --follow`).

Why the Authorization header, and not a query parameter or a subprotocol: the address of a websocket (its query
string included) is written to the access logs of daphne, of a proxy in front of it (Caddy in compose.yaml) and of any
load balancer, and may be kept in a shell's history or a CI log; a header is logged by none of them. A subprotocol
(`Sec-WebSocket-Protocol`) would keep it out of the logs too, but it exists for naming protocols, proxies may log it,
and the server must echo the chosen one back. Browsers cannot set this header on a websocket, so pages keep using the
session cookie, and a token cannot be carried by a page from another site.

A token socket meets the same rules as a session's: the socket must read the run (the consumer asks the run's access
helper with the token's user), the token needs the `read` scope (4403 without it), and the consumer's periodic re-check asks
`token_user_again`: a token revoked or expired since, or whose user was disabled, is closed out with 4401. Handshakes
count against the API's rate limits per address and per token (`API_RATE_LIMIT_*`), like the HTTP API's requests;
over them the socket is closed with 4429.

A header that is present but not a usable token never falls back to the session: the socket is anonymous (4401).
"""

from types import SimpleNamespace

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from . import ratelimit
from .clientip import throttle_address
from .models import AccessToken, Scope
from .tokens import token_authenticate

SCOPE_NEEDED = Scope.READ
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429


def bearer_secret(scope) -> str | None:
    """The secret of the handshake's `Authorization: Bearer ...` header; None when there is none. Another scheme is
    not ours: a browser behind a proxy that asks for a password sends `Basic` on its websockets too."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            kind, _, secret = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer":
                return secret.strip()
    return None


def handshake_request(scope):
    """What the audit trail and the rate limits read from a request (the client's address, method and path), for a
    websocket handshake."""
    meta = {"REMOTE_ADDR": (scope.get("client") or ("", 0))[0] or ""}
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            meta["HTTP_X_FORWARDED_FOR"] = value.decode("latin-1")
    return SimpleNamespace(META=meta, method="WEBSOCKET", path=scope.get("path", ""))


def rate_limited(secret, request) -> int:
    """Seconds to wait when the handshake is over the API's rate limits (per address, per token), else 0."""
    checks = [("address", throttle_address(request) or "unknown", settings.API_RATE_LIMIT_PER_ADDRESS)]
    if secret:
        checks.append(("key", ratelimit.digest(secret), settings.API_RATE_LIMIT_PER_TOKEN))
    for kind, identity, rate in checks:
        wait = ratelimit.hit(f"api:{kind}", identity, ratelimit.parse_rate(rate))
        if wait:
            return wait
    return 0


def token_user(secret, request):
    """(the token's user, the token) for a usable token, else (AnonymousUser, None)."""
    token = token_authenticate(secret, request=request)
    if token is None:
        return AnonymousUser(), None
    return _as_token_user(token), token


def token_user_again(token_id):
    """The token's user as it is now, or None when the token was revoked, expired or lost the `read` scope, or its user
    was disabled, since the socket opened."""
    token = AccessToken.objects.usable().select_related("user").filter(pk=token_id).first()
    if token is None or SCOPE_NEEDED not in token.scopes or token.user is None or not token.user.is_active:
        return None
    return _as_token_user(token)


def _as_token_user(token):
    user = token.user
    user.is_verified = lambda: token.two_factor  # as the HTTP API does: portal.access.second_factor_refusal reads it
    return user


class TokenAuthMiddleware:
    """Sets scope["user"] (and scope["api_token_id"]) from the handshake's bearer token, when it has one; inside
    AuthMiddlewareStack, so a token wins over a session cookie sent along."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        secret = bearer_secret(scope)
        if secret is None:
            return await self.inner(scope, receive, send)
        request = handshake_request(scope)
        wait = await database_sync_to_async(rate_limited)(secret, request)
        if wait:
            return await _refuse(receive, send, CLOSE_TOO_MANY, f"Too many requests: retry in {wait} s.")
        user, token = await database_sync_to_async(token_user)(secret, request)
        if token is not None and SCOPE_NEEDED not in token.scopes:
            return await _refuse(receive, send, CLOSE_FORBIDDEN, f"This token lacks the scope '{SCOPE_NEEDED}'.")
        scope = {**scope, "user": user, "api_token_id": token.pk if token else None, "session": None}
        return await self.inner(scope, receive, send)


async def _refuse(receive, send, code, reason):
    """Accept, then close with `code`: a close code reaches the client only on an accepted socket."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason})
