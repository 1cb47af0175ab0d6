"""The one HTTP client for tenant-chosen URLs: each connection checked and pinned, redirects bounded
and re-checked, answers bounded.

Checks live in the transport, so they hold for every request a client sends through it (each
redirect hop included) whatever the caller's options: the scheme is allowed; the host is resolved
and every address checked (`lib.outbound`), then the connection goes to a checked address itself,
so nothing resolves the name again between check and connect, while the URL (Host header, TLS SNI
and certificate verification) keeps the hostname. No proxy from the environment is used.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import time
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import cast

import anyio
import httpcore
import httpx

from socialflow.lib.outbound import (
    OutboundError,
    OutboundPolicy,
    OutboundRefused,
    OutboundResponseRefused,
    OutboundResponseTooLarge,
    OutboundTimeout,
    OutboundTooManyRedirects,
    Resolver,
    resolve_allowed,
)
from socialflow.settings import Settings

# Headers that carry a credential: never sent on to another origin by a redirect.
CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
)
_ORIGIN = "socialflow.outbound.origin"  # request extensions: a redirect hop carries them on
_HOPS = "socialflow.outbound.hops"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=5)


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs milliseconds: one context serves every guarded client.
    return httpx.create_ssl_context(trust_env=True)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks every address, and connects to a checked address (never the name)."""

    def __init__(self, policy: OutboundPolicy, resolver: Resolver | None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        try:
            with anyio.fail_after(timeout):  # one budget for resolving and connecting
                addresses = await resolve_allowed(host, port, self._policy, self._resolver)
                for address in addresses:
                    try:
                        return await self._inner.connect_tcp(
                            str(address), port, None, local_address, socket_options
                        )
                    except httpcore.ConnectError as exc:
                        failure = exc
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host!r} timed out") from exc
        except OSError as exc:  # the name does not resolve
            raise httpcore.ConnectError(f"{host!r} does not resolve") from exc
        raise failure or httpcore.ConnectError(f"could not connect to {host!r}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are not reachable through the outbound guard")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _BoundedStream(httpx.AsyncByteStream):
    """Stops reading once the body passes `limit` bytes or `deadline` (the connection is then
    dropped)."""

    def __init__(
        self, inner: httpx.AsyncByteStream, limit: int, deadline: float, host: str
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._deadline = deadline
        self._host = host

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise OutboundResponseTooLarge(
                    f"the answer of {self._host!r} passed {self._limit} bytes; reading stopped"
                )
            if time.monotonic() > self._deadline:
                raise OutboundTimeout(f"the answer of {self._host!r} took too long; stopped")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that applies the outbound policy to every request and connection."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits = _LIMITS,
    ) -> None:
        context = ssl_context or default_ssl_context()
        super().__init__(verify=context, trust_env=False, http2=False, retries=0)
        self.policy = policy
        # httpx has no parameter for httpcore's network backend, so the pool is built here; its
        # other arguments are those httpx itself passes for a proxy-less transport.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            retries=0,
            network_backend=_PinnedBackend(policy, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._check_hop(request)
        # A compressed body's size is unknown until inflated: ask for none, refuse any.
        request.headers["Accept-Encoding"] = "identity"
        timeouts = dict(request.extensions.get("timeout") or {})
        cap = self.policy.connect_timeout_s
        timeouts["connect"] = min(timeouts.get("connect") or cap, cap)
        request.extensions["timeout"] = timeouts
        # The whole answer gets the request's read timeout as its budget, not each read alone.
        deadline = time.monotonic() + (timeouts.get("read") or self.policy.timeout_s)
        response = await super().handle_async_request(request)
        try:
            self._check_answer(request, response)
        except BaseException:
            await response.aclose()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _BoundedStream(
            response.stream, self.policy.max_response_bytes, deadline, request.url.host
        )
        return response

    def _check_hop(self, request: httpx.Request) -> None:
        url = request.url
        if url.scheme not in self.policy.schemes:
            raise OutboundRefused(f"{url.scheme!r} URLs are not allowed ({url.host!r})")
        origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme))
        first = request.extensions.get(_ORIGIN)
        if first is None:
            request.extensions[_ORIGIN] = origin
            request.extensions[_HOPS] = 0
            return
        hops = int(request.extensions.get(_HOPS, 0)) + 1
        if hops > self.policy.max_redirects:
            raise OutboundTooManyRedirects(f"more than {self.policy.max_redirects} redirects")
        request.extensions[_HOPS] = hops
        if origin != first:
            for name in CREDENTIAL_HEADERS:
                request.headers.pop(name, None)

    def _check_answer(self, request: httpx.Request, response: httpx.Response) -> None:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise OutboundResponseRefused(f"{request.url.host!r} answered with {encoding!r}")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.policy.max_response_bytes:
            raise OutboundResponseTooLarge(
                f"{request.url.host!r} announced {length} bytes, more than "
                f"{self.policy.max_response_bytes}"
            )


def guarded_transport(
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    max_redirects: int | None = None,
    max_response_bytes: int | None = None,
    ssl_context: ssl.SSLContext | None = None,
    limits: httpx.Limits = _LIMITS,
) -> GuardedTransport:
    """The guarded transport alone, for libraries that build their own httpx client around one;
    `limits` sizes its connection pool."""
    policy = OutboundPolicy.from_settings(settings)
    if max_redirects is not None:
        policy = replace(policy, max_redirects=max_redirects)
    if max_response_bytes is not None:
        policy = replace(policy, max_response_bytes=max_response_bytes)
    return GuardedTransport(policy, resolver=resolver, ssl_context=ssl_context, limits=limits)


def guarded_client(
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    max_redirects: int | None = None,
    max_response_bytes: int | None = None,
    timeout: float | httpx.Timeout | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    transport: GuardedTransport | None = None,
) -> httpx.AsyncClient:
    """An httpx client for calls to tenant-chosen URLs (use it as `async with`).

    Refusals raise `OutboundError` subclasses (never an httpx error, so no library retries them
    with a client of its own); a redirect hop is followed only within `max_redirects` and is
    checked like the first request; credential headers are dropped when a hop changes origin.
    `transport` shares one built by `guarded_transport()` (the other guard options are its own).
    """
    if transport is None:
        transport = guarded_transport(
            settings,
            resolver=resolver,
            max_redirects=max_redirects,
            max_response_bytes=max_response_bytes,
            ssl_context=ssl_context,
        )
    policy = transport.policy
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=policy.max_redirects > 0,
        max_redirects=policy.max_redirects,
        timeout=timeout
        if timeout is not None
        else httpx.Timeout(policy.timeout_s, connect=policy.connect_timeout_s),
        headers=headers,
    )


# -- reading answers ----------------------------------------------------------------------------


async def read_head(response: httpx.Response, limit: int) -> bytes:
    """The first `limit` bytes of a streamed answer's body at most; the rest is never read (the
    connection is closed instead). A body cut short (too large, too slow) only loses detail."""
    head = bytearray()
    chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                head += chunk
                if len(head) >= limit:
                    break
    except (httpx.HTTPError, OutboundError):
        pass
    return bytes(head[:limit])


def printable_excerpt(head: bytes, chars: int) -> str:
    """The start of a body as one line of printable text (control, format and private-use
    characters dropped: it ends up in logs and on screens)."""
    text = head[: chars * 4].decode("utf-8", "replace")
    printable = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(printable.split())[:chars]


def retry_after_seconds(value: str | None, now: float, cap: float) -> float | None:
    """Retry-After in seconds (from delay-seconds or an HTTP date), at most `cap`; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # an HTTP date is GMT
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), cap)
