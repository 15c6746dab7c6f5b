"""API tokens and the API's docs page in a real browser: a token made on the page works with curl-like calls against
the same server, and Swagger UI renders the schema from the vendored files within the CSP."""

import json
import urllib.request

import pytest

from portal.models import AccessToken
from tests.browser import browser_page, follow, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def call(base_url, path, secret, *, method="GET", body=None):
    request = urllib.request.Request(base_url + path, method=method, headers={"Authorization": f"Bearer {secret}",
                                                                              "Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the test's own loopback server
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_developer_makes_a_token_on_the_page_and_uses_it(personas, portal_server):
    with browser_page() as page:
        violations = []
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text else None)
        log_in(page, portal_server.url, "developer")
        page.goto(f"{portal_server.url}/account/api-tokens/")
        page.fill("input[name=name]", "GitLab CI: web-os")
        page.check("input[name=scopes][value=build]")
        page.select_option("select[name=expires_in_days]", "90")
        follow(page, page.get_by_role("button", name="Make the token").click)
        secret = page.locator("code.secret-once").inner_text().strip()
        assert secret.startswith("impt_")
        screenshot(page, "api-tokens")

        status, body = call(portal_server.url, "/api/v1/teams/", secret)
        assert status == 200 and [t["slug"] for t in body["items"]] == [personas.team.slug]
        # No CSRF token and no cookie: a POST with only the bearer token goes through (here: to a 403 for the role).
        status, body = call(portal_server.url, f"/api/v1/teams/{personas.team.slug}/members/", secret, method="POST",
                            body={"username": "outsider", "role": "viewer"})
        assert status == 403 and body["missing_scope"] == "admin"

        page.goto(f"{portal_server.url}/account/api-tokens/")
        assert secret not in page.content()  # shown once
        page.once("dialog", lambda dialog: dialog.accept())
        follow(page, page.get_by_role("button", name="Revoke").click)
        assert "revoked" in page.locator("table").inner_text()
        assert call(portal_server.url, "/api/v1/teams/", secret)[0] == 401

        page.goto(f"{portal_server.url}/api/v1/docs/")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
        assert page.locator(".swagger-ui .opblock").count() >= 15
        screenshot(page, "api-docs")
        assert violations == []
    assert AccessToken.objects.get().state() == "revoked"  # the ORM only once Playwright's loop is gone
