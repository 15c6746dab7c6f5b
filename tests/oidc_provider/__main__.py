"""python -m tests.oidc_provider: migrate, register the portal as a client, serve on OIDC_TEST_PORT.

OIDC_TEST_DIR holds signing-key.pem and users.json (written by the fixture); OIDC_TEST_CLIENT_ID, _CLIENT_SECRET and
_REDIRECT_URIS (space-separated) describe the portal as a client."""

import json
import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from oauth2_provider.models import Application  # noqa: E402


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - http.server's name
        sys.stderr.write("provider: " + (format % args) + "\n")


def main():
    call_command("migrate", verbosity=0, interactive=False)
    Application.objects.update_or_create(client_id=os.environ["OIDC_TEST_CLIENT_ID"], defaults={
        "name": "Image Mode Portal", "client_secret": os.environ["OIDC_TEST_CLIENT_SECRET"],
        "client_type": Application.CLIENT_CONFIDENTIAL, "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
        "redirect_uris": os.environ["OIDC_TEST_REDIRECT_URIS"], "algorithm": Application.RS256_ALGORITHM,
        "skip_authorization": True})
    server = make_server("127.0.0.1", int(os.environ["OIDC_TEST_PORT"]), get_wsgi_application(),
                         server_class=ThreadingServer, handler_class=QuietHandler)
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
