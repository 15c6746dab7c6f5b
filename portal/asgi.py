"""ASGI entry point: Django for HTTP, Channels for websockets (run logs), both behind the same session auth (or, for a
websocket, an API token in its Authorization header: portal/socketauth.py); in front of Django, the HTTP fronts features
registered (machine endpoints answered in the event loop)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_asgi_app = get_asgi_application()

from portal.startup import require_database, require_storage  # noqa: E402

require_database()  # in production, web does not start without its database
require_storage()  # nor, with OBJECT_STORAGE=s3, without its bucket

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from portal import registry  # noqa: E402
from portal.concurrency import ConcurrencyLimit  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402
from portal.socketauth import TokenAuthMiddleware  # noqa: E402
from portal.wsbroadcast import with_prepared_sends  # noqa: E402

# Fronts a feature registered (`registry.http_front`: hosts' status reports) answer before Django's request cycle and
# outside the bound on concurrent Django requests, which they do not use; whatever they pass on meets both.
http_app = registry.behind_http_fronts(ConcurrencyLimit(django_asgi_app, settings.WEB_CONCURRENT_REQUESTS))

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # Outermost, where daphne's own send is still in hand: the log hub frames each batch once for all its sockets.
        "websocket": with_prepared_sends(
            AllowedHostsOriginValidator(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))))),
    }
)
