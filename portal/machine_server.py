"""The machine endpoints' own server: the lean paths features register (`portal.registry.lean_path`: hosts' agents,
/agent/v1/) behind the HTTP fronts (`portal.registry.http_front`: an unchanged status report answered from Redis),
and the health probes. Every other path is 404 here; pages, the API and websockets are the web processes' (daphne,
`portal.asgi`).

Why a server of its own: thousands of agents report every minute, each over a new connection (curl from a systemd
timer cannot keep one open), and the report front answers an unchanged report in about 0.3 ms of its own CPU, while
daphne spends about 1 ms more on every connection it accepts (Twisted's protocol objects, its request parsing). uvicorn
with httptools' C parser and uvloop's event loop costs a fraction of that (bench/README.md, "reportin"). The proxy
routes the lean paths here (deploy/Caddyfile); `make run`, which has no proxy, starts it on a port of its own and
hands agents that address (HOSTS_AGENT_URL).

    python -m portal.machine_server --host 127.0.0.1 --port 8001
    python -m portal.machine_server --fd 3      a listening socket handed over (several processes sharing it)
    uvicorn portal.machine_server:application   the same application, with options of your own
"""

import argparse
import json
import os
import socket

import uvicorn
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django_asgi_app = get_asgi_application()

from portal.startup import require_database, require_storage  # noqa: E402

require_database()  # in production, it does not start without its database, as web does not
require_storage()

from django.conf import settings  # noqa: E402

from portal import registry  # noqa: E402
from portal.concurrency import ConcurrencyLimit  # noqa: E402
from portal.middleware import PROBES  # noqa: E402


class MachineEndpoints:
    """`app` for the lean paths and the probes; a 404 answered here for anything else; the server's lifespan events
    acknowledged (the application keeps nothing to start or stop)."""

    def __init__(self, app, prefixes):
        self.app = app
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})  # websockets are web's
        path = scope["path"]
        if path in PROBES or (self.prefixes and path.startswith(self.prefixes)):
            return await self.app(scope, receive, send)
        served = ", ".join(self.prefixes) or "nothing"
        content = json.dumps({"error": f"Not found: this server answers the machine endpoints only ({served})."})
        await send({"type": "http.response.start", "status": 404, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
            (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": content.encode()})


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


application = MachineEndpoints(
    registry.behind_http_fronts(ConcurrencyLimit(django_asgi_app, settings.WEB_CONCURRENT_REQUESTS)),
    registry.lean_paths())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m portal.machine_server",
                                     description="Serve the machine endpoints (hosts' agents) with uvicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--fd", type=int, help="serve this listening socket instead of --host and --port")
    args = parser.parse_args(argv)

    # httptools and uvloop: the cheapest connection uvicorn has. No websockets (web's), no access log (thousands of
    # lines a second; the proxy keeps one), no proxy headers (portal.clientip reads X-Forwarded-For from
    # TRUSTED_PROXIES itself, as under daphne), and Django's logging configuration left as it is.
    config = uvicorn.Config(application, host=args.host, port=args.port, http="httptools", loop="uvloop", ws="none",
                            lifespan="on", access_log=False, proxy_headers=False, server_header=False,
                            log_config=None, backlog=4096)
    # A socket handed over (several processes accepting on one) is taken as what it is: uvicorn's own `fd` would
    # take it for a unix socket.
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
