"""Outbound URLs chosen by tenants (AI base URLs, webhooks): https, and no private networks.

A URL is checked after DNS resolution, so a name pointing at 127.0.0.1 or the cloud metadata
address is refused like the address itself; operators may allow given networks in settings.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from socialflow.lib.problems import Problem
from socialflow.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refused(detail: str) -> Problem:
    return Problem(
        422, "url-not-allowed", detail, errors=[{"field": "base_url", "message": detail}]
    )


def _is_public(address: IPAddress) -> bool:
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
            and not _is_public(address.ipv4_mapped))
    )  # fmt: skip


async def check_outbound_url(url: str, settings: Settings) -> str:
    """`url` if a tenant may make the platform call it; a 422 problem otherwise."""
    parts = urlsplit(url.strip())
    allowed_schemes = {"https", "http"} if settings.outbound_allow_http else {"https"}
    if parts.scheme not in allowed_schemes:
        raise _refused(f"The URL must use {' or '.join(sorted(allowed_schemes))}.")
    if not parts.hostname or parts.username or parts.password:
        raise _refused("The URL needs a host and no credentials.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise _refused("The URL's port is invalid.") from exc
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise _refused(f"The host {parts.hostname!r} does not resolve.") from exc
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.outbound_allowed_networks]
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not _is_public(address) and not any(address in network for network in allowed):
            raise _refused(
                f"The host {parts.hostname!r} resolves to a private, loopback or link-local "
                "address, which tenants may not reach."
            )
    return url.strip()
