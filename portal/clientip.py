"""The client's address, the one answer every part of the portal uses: login throttling, rate limits, the audit trail.

A request's `REMOTE_ADDR` is the peer that opened the connection. Behind a reverse proxy that is the proxy, and the
client's own address is in `X-Forwarded-For`, which each proxy extends with the address it received the request from.
Anyone can send that header, so it is read only when the peer is one of `TRUSTED_PROXIES` (CIDRs), and then from the
right: each hop that is itself a trusted proxy hands on to the address before it, and the first address that is not a
trusted proxy is the client. Entries left of it were written by the client and are never believed.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings


def client_ip(request):
    """The client's address as text ("203.0.113.7", "2001:db8::1"), or None when the request has none (a test or a
    unix socket)."""
    if request is None:
        return None
    peer = _parse(request.META.get("REMOTE_ADDR", ""))
    if peer is None:
        return None
    trusted = trusted_networks(tuple(settings.TRUSTED_PROXIES))
    if not _is_trusted(peer, trusted):
        return str(peer)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    client = peer
    for entry in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        address = _parse(entry)
        if address is None:
            break  # a hop we trust wrote something unreadable: go no further than the last hop we could read
        client = address
        if not _is_trusted(address, trusted):
            break
    return str(client)


def from_trusted_proxy(request):
    """Whether the request's peer is one of TRUSTED_PROXIES (whose headers, such as X-Request-ID, are believed)."""
    peer = _parse(request.META.get("REMOTE_ADDR", ""))
    return peer is not None and _is_trusted(peer, trusted_networks(tuple(settings.TRUSTED_PROXIES)))


def throttle_address(request):
    """The address that login throttling and rate limits count against: the client's IPv4 address, or the /64 network
    of its IPv6 address (as the network's first address), since one IPv6 subscriber usually holds a whole /64 and could
    otherwise take a fresh address for every try. Used as `AXES_CLIENT_IP_CALLABLE`; the audit trail keeps the full
    address (`client_ip`)."""
    address = client_ip(request)
    if address is None or ":" not in address:
        return address
    return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)


@lru_cache(maxsize=8)
def trusted_networks(cidrs):
    """The parsed `TRUSTED_PROXIES`; raises ValueError naming an entry that is not an address or a network."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"TRUSTED_PROXIES: {cidr!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _is_trusted(address, networks):
    return any(address.version == network.version and address in network for network in networks)


def _parse(text):
    """An address from a header entry, tolerating the port some proxies add ("1.2.3.4:80", "[2001:db8::1]:443"); an
    IPv4-mapped IPv6 address is read as the IPv4 address it maps."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
