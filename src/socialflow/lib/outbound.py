"""Which addresses a tenant-chosen URL may reach: one policy for the save-time check and every call.

A host is resolved and EVERY address it resolves to must be public (`is_global`, with IPv4 carried
inside IPv6 unwrapped) or inside a network the operator allowed. The call-time side of this policy
lives in `socialflow.lib.outbound_http`, which connects only to the addresses checked here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from socialflow.lib.problems import Problem
from socialflow.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to. Injectable: DNS is the outside world.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


class OutboundError(Exception):
    """The guard stopped a call to a tenant-chosen URL. `kind` is safe to show; the message is for
    logs (it names the host and address, never a body)."""

    kind = "outbound_error"


class OutboundRefused(OutboundError):
    """The URL's scheme, or an address its host resolves to, is not one tenants may reach."""

    kind = "url_not_allowed"


class OutboundResponseTooLarge(OutboundError):
    kind = "response_too_large"


class OutboundTimeout(OutboundError):
    """The whole answer did not arrive within the request's time budget (a slow drip of bytes
    can keep every single read under its timeout)."""

    kind = "timeout"


class OutboundTooManyRedirects(OutboundError):
    kind = "too_many_redirects"


class OutboundResponseRefused(OutboundError):
    """An answer the guard cannot bound (a compressed body: its size is unknown until inflated)."""

    kind = "response_not_accepted"


@dataclass(frozen=True)
class OutboundPolicy:
    """The operator's rules for tenant-chosen URLs, parsed once from settings."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_http: bool = False
    max_redirects: int = 3
    max_response_bytes: int = 10 * 1024 * 1024
    connect_timeout_s: float = 5.0
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return cls(
            allowed_networks=tuple(
                ipaddress.ip_network(n, strict=False) for n in settings.outbound_allowed_networks
            ),
            allow_http=settings.outbound_allow_http,
            max_redirects=settings.outbound_max_redirects,
            max_response_bytes=settings.outbound_max_response_bytes,
            connect_timeout_s=settings.outbound_connect_timeout_s,
            timeout_s=settings.outbound_timeout_s,
        )

    @property
    def schemes(self) -> frozenset[str]:
        return frozenset({"https", "http"} if self.allow_http else {"https"})


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (6to4, Teredo server and client, NAT64,
    IPv4-compatible): traffic to it ends up at them, so they are checked too."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def is_public_address(address: IPAddress) -> bool:
    """Globally reachable per IANA (`is_global`: also refuses 100.64.0.0/10), not multicast, and
    every IPv4 address it carries is public too."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public_address(address.ipv4_mapped)
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return False
    inner = embedded_ipv4(address)
    if address.is_reserved and not inner:
        return False  # unassigned IPv6 space (NAT64 and friends sit in ::/8 and are judged inside)
    return all(is_public_address(v4) for v4 in inner)


def address_allowed(address: IPAddress, allowed_networks: Sequence[IPNetwork] = ()) -> bool:
    """May a tenant-chosen URL reach `address`? Public, or in a network the operator allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # the same host: judge and match it as IPv4
    if any(address.version == n.version and address in n for n in allowed_networks):
        return True
    return is_public_address(address)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # a name IDNA cannot encode (a label over 63 characters)
        raise socket.gaierror(socket.EAI_NONAME, "not a valid host name") from exc
    # A scope id ("fe80::1%eth0") is not part of the address ipaddress judges.
    return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos))


async def resolve_allowed(
    host: str, port: int, policy: OutboundPolicy, resolver: Resolver | None = None
) -> list[IPAddress]:
    """Every address `host` resolves to, all of them allowed; `OutboundRefused` otherwise.
    `OSError` when the name does not resolve."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = await (resolver or system_resolver)(host, port)
    if not addresses:
        raise OSError(f"{host!r} resolves to no address")
    refused = [a for a in addresses if not address_allowed(a, policy.allowed_networks)]
    if refused:
        raise OutboundRefused(f"{host!r} resolves to {refused[0]}, which tenants may not reach")
    return addresses


def url_origin(url: str) -> str:
    """Scheme, host and port of `url`: what may be shown of a URL whose path or query can hold
    a token (a Slack or Zapier hook)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, _host_and_port(parts), "", "", ""))


def shown_url(url: str) -> str:
    """The URL without its query, fragment or credentials: what events and logs may show of a
    customer's webhook endpoint (a receiver may keep a token in its query)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, _host_and_port(parts), parts.path, "", ""))


def _host_and_port(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


def _refused(detail: str, field: str) -> Problem:
    return Problem(422, "url-not-allowed", detail, errors=[{"field": field, "message": detail}])


async def check_outbound_url(
    url: str, settings: Settings, *, resolver: Resolver | None = None, field: str = "base_url"
) -> str:
    """`url` if a tenant may make the platform call it; a 422 problem otherwise. The same policy
    is applied again on every connection (`outbound_http`): DNS can change after saving."""
    policy = OutboundPolicy.from_settings(settings)
    parts = urlsplit(url.strip())
    if parts.scheme not in policy.schemes:
        raise _refused(f"The URL must use {' or '.join(sorted(policy.schemes))}.", field)
    if not parts.hostname or parts.username or parts.password:
        raise _refused("The URL needs a host and no credentials.", field)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise _refused("The URL's port is invalid.", field) from exc
    try:
        await resolve_allowed(parts.hostname, port, policy, resolver)
    except OutboundRefused as exc:
        raise _refused(
            f"The host {parts.hostname!r} resolves to a private, loopback, link-local or otherwise "
            "non-public address, which tenants may not reach.",
            field,
        ) from exc
    except OSError as exc:
        raise _refused(f"The host {parts.hostname!r} does not resolve.", field) from exc
    return url.strip()
