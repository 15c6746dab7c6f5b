"""Fixtures for the REST API's tests (every app's): tokens for the personas, and a client that sends one."""

import json

import pytest


@pytest.fixture
def make_token(personas):
    """make_token(user, *scopes, team=None, verified=False) -> the secret of a new token with those scopes (all of
    them when none are named). With `team`, a team token made by `user` (an admin of it)."""
    from portal import tokens
    from portal.models import Scope

    def make(user, *scopes, team=None, verified=False, **options):
        scopes = scopes or [s for s in Scope.values if team is None or s not in ("approve", "admin")]
        return tokens.token_create(actor=user, name="test", scopes=list(scopes), team=team, verified=verified,
                                   **options)[1]

    return make


class ApiClient:
    """Django's test client speaking JSON to /api/v1/ with a bearer token (None: no Authorization header)."""

    def __init__(self, secret):
        from django.test import Client

        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}

    def _url(self, path):
        return path if path.startswith("/") else f"/api/v1/{path}"

    def get(self, path, data=None, **extra):
        return self.client.get(self._url(path), data, **self.headers, **extra)

    def _send(self, method, path, body, **extra):
        payload = body if isinstance(body, (str, bytes)) else json.dumps(body if body is not None else {})
        return getattr(self.client, method)(self._url(path), payload, content_type="application/json", **self.headers,
                                            **extra)

    def post(self, path, body=None, **extra):
        return self._send("post", path, body, **extra)

    def patch(self, path, body=None, **extra):
        return self._send("patch", path, body, **extra)

    def delete(self, path, **extra):
        return self.client.delete(self._url(path), **self.headers, **extra)


@pytest.fixture
def api_as(make_token):
    """api_as(user, *scopes, team=None) -> an ApiClient with a new token of `user`; api_as(None): no token."""

    def make(user, *scopes, **options):
        return ApiClient(make_token(user, *scopes, **options) if user is not None else None)

    return make


def problem(response, status):
    """The problem document of `response`, checked to be one with `status`."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body
