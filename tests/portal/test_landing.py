"""Each persona lands on its job after logging in: the help desk on the host search, an approver on the inbox, everyone
else on the dashboard; a page asked for (?next=) always wins."""

import pytest
from django.test import Client

from tests.hosts.test_integration_links import D1, make_host

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def log_in(username, next_page=""):
    response = Client().post("/login/" + (f"?next={next_page}" if next_page else ""),
                             {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content.decode()[:500]
    return response["Location"]


@pytest.mark.parametrize("username,lands_on", [("helpdesk", "/hosts/"), ("approver", "/promotions/?view=inbox"),
                                               ("developer", "/"), ("viewer", "/"), ("root", "/")])
def test_each_persona_lands_on_its_job(personas, username, lands_on):
    assert log_in(username) == lands_on


def test_a_page_asked_for_wins(personas):
    assert log_in("approver", "/hosts/") == "/hosts/"
    assert log_in("helpdesk", "/audit/") == "/audit/"


def test_the_host_search_finds_hosts_by_name_address_label_or_digest(client_for, personas):
    make_host(personas.team, "web-01", address="192.0.2.7", labels="web eu-west", booted_digest=D1)
    make_host(personas.team, "db-01", address="198.51.100.9", labels="db")
    client = client_for(personas.helpdesk)
    for query in ("web-0", "192.0.2", "eu-west", D1, D1[:13], D1[7:20]):
        html = client.get("/hosts/", {"q": query}).content.decode()
        assert "web-01" in html and "db-01" not in html, query
    html = client.get("/hosts/", {"q": "eu"}).content.decode()  # not a whole label, not six hex digits
    assert "web-01" not in html
