"""Rate limits on the JSON API and the git webhooks, per token (or webhook) and per client address, counted in the
suite's real Redis: a flood gets 429 with Retry-After, and nobody else is slowed by it.

Limits in these tests are per day, so that no window can end half-way through a test."""

import hashlib
import hmac
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse

from builds import integrations, services
from builds.models import Build, ContextKind
from portal.ratelimit import Rate, hit, parse_rate

pytestmark = pytest.mark.django_db

CONTAINERFILE = "FROM quay.io/centos-bootc/centos-bootc:stream10\nRUN bootc container lint\n"


@pytest.fixture
def token(personas):
    return integrations.api_token_create(team=personas.team, user=personas.admin, name="ci")[1]


def definitions(token, address="198.51.100.1"):
    return Client().get(reverse("builds:api_definition_list"), HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR=address)


class TestRates:
    @pytest.mark.parametrize("text, rate", [("120/m", Rate(120, 60)), ("10/s", Rate(10, 1)), ("1000/h", Rate(1000, 3600)),
                                            ("5000/d", Rate(5000, 86400)), (" 30 / 5m ", Rate(30, 300))])
    def test_rates_are_read(self, text, rate):
        assert parse_rate(text) == rate

    @pytest.mark.parametrize("text", ["", "120", "120/minute", "-1/m", "1.5/m", "m/120"])
    def test_a_bad_rate_is_refused_with_the_format(self, text):
        with pytest.raises(ImproperlyConfigured, match="write COUNT/UNIT, e.g. 120/m"):
            parse_rate(text)

    def test_a_window_allows_its_count_then_says_how_long_to_wait(self, settings):
        rate = Rate(3, 60)
        start = 1_800_000_000.0  # a window boundary (a multiple of 60)
        assert [hit("test", "me", rate, now=start + 10) for _ in range(3)] == [0, 0, 0]
        assert hit("test", "me", rate, now=start + 10) == 50
        assert hit("test", "someone else", rate, now=start + 10) == 0
        assert hit("test", "me", rate, now=start + 60) == 0  # the next window

    def test_a_bad_rate_in_the_settings_fails_the_system_check(self, settings):
        from portal.ratelimit import check_rates

        settings.API_RATE_LIMIT_PER_TOKEN = "lots"
        assert [error.id for error in check_rates()] == ["portal.E001"]


class TestApi:
    def test_a_token_over_its_limit_gets_429_with_retry_after(self, personas, token, settings):
        settings.API_RATE_LIMIT_PER_TOKEN = "3/d"
        assert [definitions(token).status_code for _ in range(3)] == [200, 200, 200]
        response = definitions(token, address="198.51.100.2")  # another address does not reset a token's count
        assert response.status_code == 429
        assert 0 < int(response["Retry-After"]) <= 86400
        assert response.json()["error"].startswith("Too many requests: at most 3 per day per token. Retry in ")

    def test_other_tokens_are_not_slowed_by_it(self, personas, token, settings):
        settings.API_RATE_LIMIT_PER_TOKEN = "2/d"
        other = integrations.api_token_create(team=personas.team, user=personas.admin, name="other")[1]
        for _ in range(3):
            definitions(token)
        assert definitions(token).status_code == 429
        assert definitions(other).status_code == 200

    def test_one_address_guessing_tokens_is_limited(self, personas, token, settings):
        settings.API_RATE_LIMIT_PER_ADDRESS = "4/d"
        assert [definitions(f"imp_guess{n}").status_code for n in range(4)] == [401] * 4
        response = definitions("imp_guess5")
        assert response.status_code == 429 and "from one address" in response.json()["error"]
        assert definitions(token, address="198.51.100.9").status_code == 200

    def test_every_api_endpoint_is_limited(self, personas, token, settings):
        settings.API_RATE_LIMIT_PER_TOKEN = "1/d"
        auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        client = Client()
        for url, method in [(reverse("builds:api_definition_list"), "get"), (reverse("builds:api_build_detail", args=[1]), "get"),
                            (reverse("builds:api_build_create"), "post")]:
            settings.RATE_LIMIT_KEY_PREFIX += "x"  # a fresh count for each endpoint
            getattr(client, method)(url, **auth)
            assert getattr(client, method)(url, **auth).status_code == 429, url
        assert not Build.objects.exists()

    def test_requests_go_through_when_redis_is_down(self, personas, token, settings, tmp_path):
        settings.API_RATE_LIMIT_PER_TOKEN = "1/d"
        settings.REDIS_URL = f"unix://{tmp_path}/nobody-listens.sock"
        assert [definitions(token).status_code for _ in range(3)] == [200, 200, 200]


@pytest.fixture
def hook(personas):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="from-git")
    services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE,
                             context_kind=ContextKind.GIT, git_url="https://git.example.com/acme/os.git", git_ref="main")
    return integrations.webhook_create(team=personas.team, user=personas.admin)


def push(hook, secret, address="140.82.112.1"):
    body = json.dumps({"ref": "refs/heads/main", "after": "a" * 40,
                       "repository": {"clone_url": "https://git.example.com/acme/os.git"}}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return Client().post(reverse("builds:git_webhook", args=[hook.key]), body, content_type="application/json",
                         HTTP_X_GITHUB_EVENT="push", HTTP_X_HUB_SIGNATURE_256=signature, REMOTE_ADDR=address)


class TestWebhooks:
    def test_a_flooded_webhook_gets_429_and_builds_nothing_more(self, personas, hook, settings):
        settings.WEBHOOK_RATE_LIMIT_PER_HOOK = "2/d"
        endpoint, secret = hook
        assert [push(endpoint, secret).status_code for _ in range(2)] == [202, 202]
        builds = Build.objects.count()
        response = push(endpoint, secret, address="140.82.112.2")
        assert response.status_code == 429 and response["Retry-After"].isdigit()
        assert "per webhook" in response.json()["error"]
        assert Build.objects.count() == builds

    def test_other_teams_webhooks_from_the_same_git_host_still_arrive(self, personas, hook, settings):
        settings.WEBHOOK_RATE_LIMIT_PER_HOOK = "1/d"
        endpoint, secret = hook
        other, other_secret = integrations.webhook_create(team=personas.other_team, user=None)
        push(endpoint, secret)
        assert push(endpoint, secret).status_code == 429
        assert push(other, other_secret).status_code == 202

    def test_one_address_guessing_webhook_urls_is_limited(self, personas, settings):
        settings.WEBHOOK_RATE_LIMIT_PER_ADDRESS = "3/d"
        client = Client()
        statuses = [client.post(f"/hooks/git/guess{n}/", b"{}", content_type="application/json",
                                REMOTE_ADDR="203.0.113.4").status_code for n in range(4)]
        assert statuses == [404, 404, 404, 429]
