"""The fleet view's version spread: per repository and stage tag, the digests its hosts boot as a stacked bar, in the
stages' order, each digest in the colour of its row in the table below."""

import pytest
from django.urls import reverse

from hosts.fleet import version_spread
from tests.hosts.test_integration_links import D1, D2, REPOSITORY, make_host

pytestmark = pytest.mark.django_db


def test_each_tag_is_a_bar_of_its_digests_in_the_stages_order():
    rows = [{"digest": D2, "version": "1.1", "per_tag": {"test": 1, "dev": 3}},
            {"digest": D1, "version": "1.0", "per_tag": {"test": 3}}]
    bars = version_spread(rows, {"dev": 0, "test": 1, "prod": 2})
    assert [(tag, hosts) for tag, hosts, _ in bars] == [("dev", 3), ("test", 4)]
    test = bars[1][2]
    assert [(p["version"], p["n"], p["x"], p["width"], p["colour"]) for p in test] == [
        ("1.1", 1, "0.000", "25.000", 0), ("1.0", 3, "25.000", "75.000", 1)]
    assert [row["colour"] for row in rows] == [0, 1]


def test_the_fleet_view_draws_the_spread_per_stage_tag(client_for, personas):
    team = personas.team
    for n in range(3):
        make_host(team, f"t{n}", booted_digest=D1, booted_version="1.0", booted_image=f"{REPOSITORY}:test")
    make_host(team, "t3", booted_digest=D2, booted_version="1.1", booted_image=f"{REPOSITORY}:test")
    make_host(team, "d0", booted_digest=D2, booted_version="1.1", booted_image=f"{REPOSITORY}:dev")
    html = client_for(personas.viewer).get(reverse("hosts:host_fleet")).content.decode()
    spread = html.split('class="version-spread')[1].split("</table>")[0]
    assert spread.index(":dev") < spread.index(":test")
    assert 'aria-label="4 hosts via test: ' in spread and "3 on 1.0" in spread and "1 on 1.1" in spread
    assert spread.count("<rect ") == 3 and 'style="' not in spread
    assert 'class="bs-swatch bs-c' in spread
