"""Attacks on the login form, each reproduced and refused: password spraying from one address, a distributed guess at
one account, locking an account's owner out, spoofed and proxied client addresses."""

import pytest
from django.core import signing
from django.test import Client, RequestFactory

from portal.clientip import client_ip, throttle_address
from portal.login import KNOWN_BROWSER_COOKIE
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


@pytest.fixture
def limits(settings):
    """Small limits, so each attack takes a few requests (the hasher is the real, slow one)."""
    settings.LOGIN_FAILURES_PER_ADDRESS = 4
    settings.LOGIN_FAILURES_PER_USER = 3
    settings.TRUSTED_PROXIES = []
    return settings


def login(client, username, password, address="198.51.100.1", **headers):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address, **headers)


def signed_in(response):
    return response.status_code == 302 and response["Location"] == "/"


class TestPasswordSpraying:
    def test_one_address_trying_one_password_over_many_usernames_is_locked_out(self, personas, limits):
        attacker = Client()
        for name in ["viewer", "approver", "operator"]:
            assert login(attacker, name, "Summer2026!").status_code == 200
        assert login(attacker, "teamadmin", "Summer2026!").status_code == 429  # the fourth failure locks
        response = login(attacker, "developer", PASSWORD)  # even a right password, from that address
        assert response.status_code == 429
        assert b"Your address made 4 failed login attempts" in response.content

    def test_other_addresses_are_not_affected(self, personas, limits):
        for name in ["viewer", "approver", "operator", "teamadmin"]:
            login(Client(), name, "Summer2026!", address="198.51.100.1")
        assert signed_in(login(Client(), "viewer", PASSWORD, address="198.51.100.2"))

    def test_signing_in_to_an_account_of_ones_own_does_not_clear_the_address_counter(self, personas, limits):
        attacker = Client()
        for name in ["viewer", "approver", "operator"]:
            login(attacker, name, "Summer2026!")
        assert signed_in(login(Client(), "outsider", PASSWORD))  # the attacker's own account, same address
        login(attacker, "teamadmin", "Summer2026!")
        assert login(attacker, "developer", PASSWORD).status_code == 429


class TestGuessingOneAccount:
    def test_failures_from_many_addresses_lock_the_username_for_new_browsers(self, personas, limits):
        for n in range(3):
            login(Client(), "developer", f"guess {n}", address=f"203.0.113.{n + 1}")
        response = login(Client(), "developer", PASSWORD, address="203.0.113.99")
        assert response.status_code == 429
        assert b"This username had 3 failed login attempts" in response.content
        assert signed_in(login(Client(), "viewer", PASSWORD, address="203.0.113.99"))  # other users are unaffected

    def test_the_owner_still_signs_in_from_a_browser_they_used_before(self, personas, limits):
        own_browser = Client()
        assert signed_in(login(own_browser, "developer", PASSWORD, address="192.0.2.10"))
        own_browser.post("/logout/", REMOTE_ADDR="192.0.2.10")
        for n in range(5):
            login(Client(), "developer", f"guess {n}", address=f"203.0.113.{n + 1}")
        assert login(Client(), "developer", PASSWORD, address="203.0.113.99").status_code == 429
        assert signed_in(login(own_browser, "developer", PASSWORD, address="192.0.2.10"))

    def test_a_known_browser_cookie_for_another_user_or_forged_does_not_help(self, personas, limits):
        viewer_browser = Client()
        assert signed_in(login(viewer_browser, "viewer", PASSWORD))
        viewer_browser.post("/logout/")
        for n in range(3):
            login(Client(), "developer", f"guess {n}", address=f"203.0.113.{n + 1}")
        assert login(viewer_browser, "developer", PASSWORD, address="203.0.113.50").status_code == 429
        forged = Client()
        forged.cookies[KNOWN_BROWSER_COOKIE] = signing.dumps(["developer"], salt="some other salt")
        assert login(forged, "developer", PASSWORD, address="203.0.113.51").status_code == 429

    def test_a_known_browser_is_still_held_to_its_address_counter(self, personas, limits):
        own_browser = Client()
        assert signed_in(login(own_browser, "developer", PASSWORD))
        own_browser.post("/logout/")
        for n in range(4):
            login(own_browser, "developer", f"typo {n}")
        assert login(own_browser, "developer", PASSWORD).status_code == 429


class TestIpv6:
    def test_addresses_of_one_ipv6_network_share_the_address_counter(self, personas, limits):
        for n in range(4):  # one subscriber's /64, a fresh address for every try
            login(Client(), f"user{n}", "Summer2026!", address=f"2001:db8:1:2::{n + 1:x}")
        assert login(Client(), "viewer", PASSWORD, address="2001:db8:1:2:ffff::9").status_code == 429
        assert signed_in(login(Client(), "viewer", PASSWORD, address="2001:db8:1:3::1"))  # the next /64
        failed = AuditEvent.objects.filter(action="auth.login_failed").values_list("ip_address", flat=True)
        assert "2001:db8:1:2::1" in set(failed)  # the trail keeps the whole address


class TestProxies:
    def test_x_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_is_ignored(self, personas, limits):
        attacker = Client()
        for n in range(4):  # a new made-up address in every request: still one peer
            login(attacker, f"user{n}", "Summer2026!", address="198.51.100.7", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        assert login(attacker, "viewer", PASSWORD, address="198.51.100.7",
                     HTTP_X_FORWARDED_FOR="192.0.2.200").status_code == 429
        failed = AuditEvent.objects.filter(action="auth.login_failed")
        assert set(failed.values_list("ip_address", flat=True)) == {"198.51.100.7"}

    def test_behind_a_trusted_proxy_one_client_cannot_lock_the_others_out(self, personas, limits):
        limits.TRUSTED_PROXIES = ["10.0.0.0/8"]
        for n in range(6):
            login(Client(), f"user{n}", "Summer2026!", address="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.5")
        assert login(Client(), "viewer", PASSWORD, address="10.0.0.2",
                     HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 429
        assert signed_in(login(Client(), "viewer", PASSWORD, address="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.6"))
        assert AuditEvent.objects.get(action="auth.login").ip_address == "203.0.113.6"

    def test_a_client_cannot_slip_an_address_in_front_of_the_proxys(self, personas, limits):
        limits.TRUSTED_PROXIES = ["10.0.0.0/8"]
        for n in range(4):  # the proxy appends the real address after whatever the client sent
            login(Client(), f"user{n}", "x", address="10.0.0.2", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.5")
        assert login(Client(), "viewer", PASSWORD, address="10.0.0.2",
                     HTTP_X_FORWARDED_FOR="192.0.2.250, 203.0.113.5").status_code == 429


class TestClientAddress:
    """portal.clientip.client_ip: the one answer to "who is asking"."""

    def ip(self, settings, remote, forwarded=None, trusted=()):
        settings.TRUSTED_PROXIES = list(trusted)
        extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
        return client_ip(RequestFactory().get("/", REMOTE_ADDR=remote, **extra))

    def test_without_trusted_proxies_the_peer_is_the_client(self, settings):
        assert self.ip(settings, "198.51.100.7", "1.2.3.4") == "198.51.100.7"

    def test_a_trusted_proxy_names_the_client(self, settings):
        assert self.ip(settings, "10.0.0.2", "203.0.113.5", trusted=["10.0.0.0/8"]) == "203.0.113.5"

    def test_a_chain_of_trusted_proxies_is_walked_from_the_right(self, settings):
        chain = "192.0.2.66, 203.0.113.5, 10.1.1.1, 10.2.2.2"
        assert self.ip(settings, "10.0.0.2", chain, trusted=["10.0.0.0/8"]) == "203.0.113.5"

    def test_only_trusted_proxies_are_believed_along_the_chain(self, settings):
        assert self.ip(settings, "10.0.0.2", "192.0.2.66, 198.51.100.3", trusted=["10.0.0.2"]) == "198.51.100.3"

    def test_ports_ipv6_and_mapped_addresses(self, settings):
        trusted = ["10.0.0.0/8", "fd00::/8"]
        assert self.ip(settings, "10.0.0.2", "203.0.113.5:5123", trusted=trusted) == "203.0.113.5"
        assert self.ip(settings, "fd00::2", "[2001:db8::7]:443", trusted=trusted) == "2001:db8::7"
        assert self.ip(settings, "::ffff:10.0.0.2", "2001:db8::8", trusted=trusted) == "2001:db8::8"

    def test_an_unreadable_entry_stops_the_walk_at_the_last_readable_hop(self, settings):
        assert self.ip(settings, "10.0.0.2", "203.0.113.5, garbage", trusted=["10.0.0.0/8"]) == "10.0.0.2"
        assert self.ip(settings, "10.0.0.2", "", trusted=["10.0.0.0/8"]) == "10.0.0.2"

    def test_throttling_counts_ipv6_per_64(self, settings):
        settings.TRUSTED_PROXIES = []
        request = RequestFactory().get("/", REMOTE_ADDR="2001:db8:1:2:3:4:5:6")
        assert throttle_address(request) == "2001:db8:1:2::"
        assert throttle_address(RequestFactory().get("/", REMOTE_ADDR="198.51.100.7")) == "198.51.100.7"

    def test_no_address_at_all(self, settings):
        assert self.ip(settings, "") is None
        assert client_ip(None) is None
