"""The egress policy: which addresses the portal may reach when it fetches something on someone's behalf.

Notification webhooks, git remotes, registries (pushes, promotions, base images, the hosts' image references), `ADD`
URLs and AMI endpoints all name a place on the network that a person typed, or that a host reported. Without a policy,
any of them can point at the portal's own network: `http://127.0.0.1:6379/`, the database, or the cloud's metadata
service at 169.254.169.254, which hands out the machine's credentials.

The rule: a destination is refused when its address is loopback, private, link-local, multicast, unspecified, reserved
or a cloud metadata address, unless `EGRESS_ALLOW` names it. Entries are host names, addresses or CIDR blocks, each
with an optional port (`registry.internal`, `10.20.0.0/16`, `127.0.0.1:5000`, `[::1]:8080`). The portal's own
registry (`REGISTRY_URL`) is allowed too: the operator named it. Metadata addresses and names are refused even when a
CIDR block would allow them.

A name is resolved once. The portal's own HTTP (`post`) then connects to the address that was checked, so a DNS answer
that changes between the check and the connection ("rebinding") cannot move it. git, skopeo and podman resolve names
themselves: for them the check runs just before the call, and git over HTTP(S) is pinned with `http.curloptResolve`.
docs/security.md says what remains (a name rebound between that check and the tool's own lookup) and the mitigation
(an egress proxy or firewall in front of the workers).

`check(...)` raises `EgressRefused` with a sentence a person can act on. Forms call it when a URL is saved, so a refused
URL is an error at once; workers call it again before every use. A name that does not resolve is not refused (the
tool given it cannot reach it either), but `post` never connects to an address it did not check.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services: AWS (IPv4, IPv6 and the ECS task endpoint), GCP, Azure, OpenStack, DigitalOcean
# (169.254.169.254), Alibaba Cloud (100.100.100.200) and Oracle Cloud (192.0.0.192).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "fd00:ec2::253", "100.100.100.200",
    "192.0.0.192",
))
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.com", "metadata.platformequinix.com",
})
NAT64 = ipaddress.ip_network("64:ff9b::/96")
CARRIER_NAT = ipaddress.ip_network("100.64.0.0/10")
DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418}
HOST_NAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*$")


class EgressRefused(Exception):
    """The policy refuses this destination; the message says which and why."""


@dataclass(frozen=True)
class Rule:
    """One EGRESS_ALLOW entry: a host name or a network, and a port (None: any port)."""

    name: str = ""
    network: IPNetwork | None = None
    port: int | None = None

    def allows_name(self, host: str, port: int | None) -> bool:
        return bool(self.name) and self.name == host and self._port_matches(port)

    def allows_address(self, address: IPAddress, port: int | None) -> bool:
        return (self.network is not None and address.version == self.network.version and address in self.network
                and self._port_matches(port))

    def _port_matches(self, port):
        return self.port is None or self.port == port


@dataclass(frozen=True)
class Destination:
    """A checked destination: the host as given, its port, the addresses that were checked (in the resolver's order;
    empty when the name did not resolve), and whether EGRESS_ALLOW names the host itself. `post` connects only to the
    checked addresses."""

    host: str
    port: int | None
    addresses: tuple[IPAddress, ...]
    by_name: bool = False


# --- Rules -----------------------------------------------------------------------------------------------------------


def parse_rule(entry: str) -> Rule:
    """One allow-list entry. Raises ValueError with the reason."""
    text = entry.strip().lower().rstrip(".")
    if not text:
        raise ValueError("an empty entry")
    port = None
    if text.startswith("["):
        inside, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), entry) if rest.startswith(":") else _bad(entry)
        text = inside
    elif text.count(":") == 1:
        text, raw_port = text.split(":")
        port = _port(raw_port, entry)
    try:
        return Rule(network=ipaddress.ip_network(text, strict=False), port=port)
    except ValueError:
        pass
    if not HOST_NAME_RE.match(text):
        raise ValueError(f"{entry!r} is neither a host name, an address nor a CIDR block")
    return Rule(name=text, port=port)


def _port(text, entry):
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r} has no valid port")
    return int(text)


def _bad(entry):
    raise ValueError(f"{entry!r} is not [address]:port")


@lru_cache(maxsize=8)
def _rules(entries: tuple[str, ...]) -> tuple[Rule, ...]:
    rules = []
    for entry in entries:
        try:
            rules.append(parse_rule(entry))
        except ValueError as exc:
            raise ImproperlyConfigured(f"EGRESS_ALLOW: {exc}") from None
    return tuple(rules)


def rules() -> tuple[Rule, ...]:
    """The allow-list: EGRESS_ALLOW, then the portal's own registry."""
    entries = tuple(settings.EGRESS_ALLOW)
    registry = settings.REGISTRY_URL.split("/", 1)[0]
    return _rules(entries) + _rules((registry,))


# --- Addresses -------------------------------------------------------------------------------------------------------


def refusal(address: IPAddress) -> str:
    """Why the policy refuses `address` unless it is allowed ("" when it is a public address)."""
    if address.version == 6:
        embedded = address.ipv4_mapped or address.sixtofour or (
            ipaddress.IPv4Address(int(address) & 0xFFFFFFFF) if address in NAT64 else None)
        if embedded is not None:
            reason = refusal(embedded)
            return f"{reason} inside an IPv6 address" if reason else ""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if address in CARRIER_NAT:
        return "a carrier-grade NAT address"
    if not address.is_global:
        return "a reserved address"
    return ""


def resolve(host: str, port: int | None) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order. Raises OSError when it does not resolve."""
    infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check(host: str, port: int | None, *, what: str) -> Destination:
    """Check one destination; returns it with its checked addresses. Raises EgressRefused.

    `what` starts the message ("The webhook URL", "The registry"). A name that does not resolve now is returned with
    no addresses: a tool given it will most likely not resolve it either, and `post` does not connect to it. (A
    resolver that answers nothing now and an internal address a moment later is the rebinding risk that
    docs/security.md names.)
    """
    host = (host or "").strip().lower().rstrip(".")
    if not host:
        raise EgressRefused(f"{what} names no host.")
    if port is not None and not 0 < port < 65536:
        raise EgressRefused(f"{what} names port {port}, which does not exist.")
    allowed = rules()
    literal = _literal(host)
    by_name = False
    if literal is None:
        if host in METADATA_NAMES:
            raise EgressRefused(f"{what} names {host}, a cloud metadata service: the portal never connects there.")
        by_name = any(rule.allows_name(host, port) for rule in allowed)
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError):
            return Destination(host, port, (), by_name)
        if by_name:
            metadata = [a for a in addresses if a in METADATA_ADDRESSES]
            if metadata:
                raise EgressRefused(f"{what} names {host}, which resolves to {metadata[0]}, a cloud metadata address.")
            return Destination(host, port, tuple(addresses), by_name)
    else:
        addresses = [literal]
    for address in addresses:
        reason = refusal(address)
        if not reason:
            continue
        if address not in METADATA_ADDRESSES and any(rule.allows_address(address, port) for rule in allowed):
            continue
        where = str(address) if literal is not None else f"{host}, which resolves to {address}"
        raise EgressRefused(f"{what} points at {where}, {reason}. The portal does not connect to its own network on "
                            "anyone's behalf; an administrator can allow it in EGRESS_ALLOW.")
    return Destination(host, port, tuple(addresses), by_name)


def split_url(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, or of git's scp-like `user@host:path`. Raises EgressRefused when unreadable."""
    scp = re.match(r"^(?:[^@/\s]+@)?(\[[^\]]+\]|[^:/\s]+):(?!//)", url)
    if "://" not in url and scp:
        return "ssh", scp.group(1).strip("[]"), DEFAULT_PORTS["ssh"]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EgressRefused(f"{url!r} is not a URL the portal can read.") from None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", port if port is not None else DEFAULT_PORTS.get(scheme)


def check_url(url: str, *, what: str) -> Destination:
    """Check the host and port of `url` (http, https, ssh, git, or scp-like). file:// URLs name no host: they are
    governed by BUILD_GIT_URL_SCHEMES, not by this policy."""
    scheme, host, port = split_url(url)
    if scheme == "file":
        return Destination("", None, ())
    return check(host, port, what=what)


def registry_host(reference: str) -> tuple[str, int | None] | None:
    """(host, port) of the registry an image reference names, or None for podman's local names (`localhost/x`
    without a port is an image in local storage) and Docker Hub short names."""
    first, slash, _ = reference.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        return None  # docker.io/library/x or docker.io/user/x: a public registry
    if first == "localhost":
        return None
    if first.startswith("["):
        host, _, rest = first[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = first.rpartition(":") if first.count(":") == 1 else (first, "", "")
    return host, int(port) if port.isdigit() else 443


def check_image(reference: str, *, what: str) -> Destination | None:
    """Check the registry of an image reference (`registry[:port]/path[:tag|@digest]`)."""
    found = registry_host(reference)
    if found is None:
        return None
    return check(found[0], found[1], what=what)


# --- The portal's own HTTP -------------------------------------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, *, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, *, address, timeout):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        # Certificate and SNI are for the name in the URL, whatever address it was resolved to.
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Answer:
    status: int
    reason: str
    address: str


def _open(url: str, *, timeout: float, what: str):
    """A connection to `url`'s host under the policy, to an address that was checked, and the request target."""
    scheme, host, port = split_url(url)
    if scheme not in ("http", "https"):
        raise EgressRefused(f"{what} must start with https:// or http://.")
    if urlsplit(url).username is not None:
        raise EgressRefused(f"{what} must not carry a user name or password.")
    destination = check(host, port, what=what)
    addresses = destination.addresses
    if not addresses:
        if not destination.by_name:
            raise OSError(f"{host} does not resolve")
        addresses = tuple(resolve(host, port))  # a name the allow-list trusts, whatever it resolves to
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    for address in addresses:
        candidate = connection_class(host, port, address=str(address), timeout=timeout)
        try:
            candidate.connect()
        except OSError:
            candidate.close()
            if address == addresses[-1]:
                raise
            continue  # the next checked address
        return candidate, target
    raise OSError(f"{host} has no address to connect to")


def post(url: str, *, body: bytes, headers: dict[str, str], timeout: float, what: str = "The URL") -> Answer:
    """POST `body` to `url` under the policy, connecting only to an address that was checked. Redirects are answers:
    they are never followed, so nothing reaches a place that was not checked. The response body is not read.

    Raises EgressRefused, or OSError (including http.client's errors and timeouts) when the receiver cannot be reached.
    """
    connection, target = _open(url, timeout=timeout, what=what)
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(status=response.status, reason=response.reason, address=connection.address)
    except http.client.HTTPException as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        connection.close()


@dataclass
class Download:
    status: int
    reason: str
    data: bytes  # the body, when the status is 200 and it fits `limit`
    too_large: bool  # the body is longer than `limit` (by its Content-Length, or as it was read): not kept
    length: int | None  # the Content-Length the server announced, if any


def get(url: str, *, timeout: float, limit: int, what: str = "The URL", chunk: int = 1 << 20) -> Download:
    """GET `url` under the policy, like `post`, reading at most `limit` bytes of the body: a larger one (announced, or
    found while reading) is dropped after `limit` + 1 bytes, so a huge answer costs no memory. Redirects are answers.

    `timeout` bounds the whole answer, not each read: a server that sends a byte now and then is cut off when the time
    is up (a watchdog shuts the socket), so a slow or malicious server cannot hold a worker for longer.

    Raises EgressRefused, or OSError when the server cannot be reached, the answer is cut off or takes too long."""
    connection, target = _open(url, timeout=timeout, what=what)
    expired = threading.Event()

    def cut():
        expired.set()
        try:
            connection.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass  # closed already

    watchdog = threading.Timer(timeout, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        answer = _get(connection, target, limit=limit, chunk=chunk)
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise OSError(f"{what} did not answer in full within {timeout:g} s.") from None
        if isinstance(exc, OSError):
            raise
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
        connection.close()
    if expired.is_set():  # the socket was shut mid-body: what was read is not the whole answer
        raise OSError(f"{what} did not answer in full within {timeout:g} s.")
    return answer


def _get(connection, target: str, *, limit: int, chunk: int) -> Download:
    connection.request("GET", target, headers={"Accept": "application/json, application/zip, */*"})
    response = connection.getresponse()
    announced = response.getheader("Content-Length")
    length = int(announced) if announced and announced.isdigit() else None
    if response.status != 200:
        return Download(response.status, response.reason, b"", False, length)
    if length is not None and length > limit:
        return Download(response.status, response.reason, b"", True, length)
    parts, size = [], 0
    while size <= limit:
        block = response.read(min(chunk, limit + 1 - size))
        if not block:
            break
        parts.append(block)
        size += len(block)
    if size > limit:
        return Download(response.status, response.reason, b"", True, length)
    return Download(response.status, response.reason, b"".join(parts), False, length)
