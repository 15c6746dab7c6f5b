"""The core's registry: features show themselves through it, and the core imports none of them."""

import re

from portal import registry


def test_a_failing_subscriber_is_logged_and_the_others_still_run(caplog):
    heard = []

    def broken(**details):
        raise RuntimeError("subscriber down")

    registry.subscribe("test.announced", broken)
    registry.subscribe("test.announced", lambda **details: heard.append(details))
    try:
        assert registry.announce("test.announced", digest="sha256:1") == 1
    finally:
        registry._subscribers.pop("test.announced")
    assert heard == [{"digest": "sha256:1"}]
    assert "test.announced: subscriber" in caplog.text and "subscriber down" in caplog.text


def test_an_unserved_fragment_has_no_url():
    assert registry.fragment_url("nobody.serves.this", 1) is None


def test_the_features_registered_their_tiles_and_what_a_new_team_gets():
    labels = [tile.label for group in registry.tile_groups() for tile in group.tiles]
    assert labels == ["Image definitions", "Builds", "Waiting for approval", "Hosts", "Hosts drifting"]
    assert [f.__name__ for f in registry.team_setup_functions()] == ["stages_ensure_default"]


def test_each_dashboard_tile_opens_the_list_of_what_it_counts(personas, client_for):
    from django.urls import reverse

    page = client_for(personas.developer).get("/").content.decode()
    links = dict((label, href) for href, label in re.findall(r'<a href="([^"]+)" class="card tile[^>]*>.*?tile-label">([^<]+)<',
                                                           page, re.S))
    assert links["Hosts"] == reverse("hosts:host_list")
    assert links["Hosts drifting"] == reverse("hosts:host_drift")


def test_the_team_page_links_the_features_pages_for_whoever_may_use_them(personas, client_for):
    from django.urls import reverse

    integrations = reverse("builds:integrations", args=[personas.team.slug])
    notifications = reverse("portal:notification_webhooks", args=[personas.team.slug])
    admin = client_for(personas.admin).get(personas.team.get_absolute_url()).content.decode()
    assert f'href="{integrations}"' in admin and f'href="{notifications}"' in admin
    viewer = client_for(personas.viewer).get(personas.team.get_absolute_url()).content.decode()
    assert integrations not in viewer and notifications not in viewer


def test_an_asker_gets_every_provider_in_order_and_a_providers_error_reaches_it():
    registry.provide("test.question", lambda **details: None)
    registry.provide("test.question", lambda **details: details["n"] + 1)
    try:
        assert [provider(n=1) for provider in registry.providers("test.question")] == [None, 2]
        assert registry.providers("nobody.answers") == []
    finally:
        registry._providers.pop("test.question")


def test_the_supply_chain_answers_what_a_promotions_copy_must_verify():
    from builds.releases.apply import COPY_TRUST
    from builds.supplychain.services import copy_trust

    assert registry.providers(COPY_TRUST) == [copy_trust]
