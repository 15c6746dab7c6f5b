"""A refused request (403, 404) is logged as one line by a real daphne, not as a traceback, and not twice."""

import http.client
from urllib.parse import urlsplit

import pytest

from tests.helpers import wait_for
from tests.plugins.personas import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def get(server, path, cookie):
    address = urlsplit(server.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie})
        return conn.getresponse().status
    finally:
        conn.close()


def test_403_and_404_are_one_line_each_in_the_log(portal_server, client):
    client.force_login(make_user("someone"), backend="django.contrib.auth.backends.ModelBackend")
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    refused = {
        "/no-such-page/": 404,  # no URL matches
        "/runs/987654/": 404,  # the view's access helper raised Http404
        "/builders/new/": 403,  # the view raised PermissionDenied
    }
    assert {path: get(portal_server, path, cookie) for path in refused} == refused

    wait_for(lambda: "/builders/new/" in portal_server.output(), what="the refusals to be logged")
    output = portal_server.output()
    logged = [line for line in output.splitlines() if "django.request" in line or line.startswith(("Not Found", "Forbidden"))]
    assert [line.split("django.request: ", 1)[1] for line in logged] == [
        "Not Found: /no-such-page/", "Not Found: /runs/987654/", "Forbidden (Permission denied): /builders/new/"], output
    assert "Traceback" not in output
