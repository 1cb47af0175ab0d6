"""One request to a customer's endpoint: a Standard Webhooks POST, signed, through the outbound
guard, and what its answer means.

The body is the event as `{"type", "timestamp", "data"}` (the spec's shape), built once when
the delivery is made and sent byte for byte on every attempt; `webhook-id` is the event id
(the same on every attempt and replay: receivers dedup by it); `webhook-timestamp` is the
attempt's own. No redirect is followed (a 3xx is a failure), the whole request has
WEBHOOK_TIMEOUT_S, and only the answer's first WEBHOOK_ANSWER_BYTES are read.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx

from socialflow.lib import webhook_signing
from socialflow.lib.outbound import OutboundError
from socialflow.lib.outbound_http import (
    guarded_client,
    guarded_transport,
    printable_excerpt,
    read_head,
    retry_after_seconds,
)
from socialflow.settings import Settings
from socialflow.social.clients import cookieless

USER_AGENT = "SocialFlow-Webhooks/1.0"
ANSWER_READ_BYTES = 4096
EXCERPT_CHARS = 1000
MAX_RETRY_AFTER_S = 24 * 3600.0
# The guard refuses an answer that announces more than its limit before the status is seen;
# here the status decides, and only ANSWER_READ_BYTES are ever read.
_GUARD_RESPONSE_BYTES = 1 << 40


class Result(StrEnum):
    DELIVERED = "delivered"  # a 2xx
    FAILED = "failed"  # anything else: retried with backoff
    GONE = "gone"  # 410: the endpoint is disabled


@dataclass(frozen=True, slots=True)
class Answer:
    result: Result
    latency_ms: int
    status: int | None = None
    error: str | None = None  # why it failed, never the URL's query or a secret
    excerpt: str | None = None  # the answer's start, printable
    retry_after_s: float | None = None


def body_of(event_type: str, occurred_at: datetime, data: dict[str, Any]) -> str:
    """The delivery's body, exactly as signed and sent."""
    timestamp = occurred_at.isoformat().replace("+00:00", "Z")
    event = {"type": event_type, "timestamp": timestamp, "data": data}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def webhook_client(settings: Settings) -> httpx.AsyncClient:
    """A guarded client for endpoints (no redirects, the policy's addresses only, no cookies),
    for a request's one-off call (a test delivery); use it as `async with`."""
    return cookieless(
        guarded_client(
            settings,
            max_redirects=0,
            max_response_bytes=_GUARD_RESPONSE_BYTES,
            timeout=httpx.Timeout(settings.webhook_timeout_s),
        )
    )


_WORKER_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
_WORKER_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[Settings, httpx.AsyncClient]
] = weakref.WeakKeyDictionary()


def worker_client(settings: Settings) -> httpx.AsyncClient:
    """The running loop's shared client for endpoints: a worker's deliveries reuse its
    connections."""
    loop = asyncio.get_running_loop()
    found = _WORKER_CLIENTS.get(loop)
    if found is None or found[0] is not settings or found[1].is_closed:
        transport = guarded_transport(
            settings,
            max_redirects=0,
            max_response_bytes=_GUARD_RESPONSE_BYTES,
            limits=_WORKER_LIMITS,
        )
        http = cookieless(
            guarded_client(
                settings, timeout=httpx.Timeout(settings.webhook_timeout_s), transport=transport
            )
        )
        found = _WORKER_CLIENTS[loop] = (settings, http)
    return found[1]


async def send(
    http: httpx.AsyncClient,
    settings: Settings,
    url: str,
    *,
    secrets: Sequence[str],
    webhook_id: str | uuid.UUID,
    body: str,
) -> Answer:
    """POST `body` signed with every secret in `secrets`; what came back, never raising for
    what the receiver or the network did."""
    started = time.monotonic()
    data = body.encode()
    headers = {
        **webhook_signing.headers(secrets, str(webhook_id), int(time.time()), data),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    status: int | None = None
    retry_after: str | None = None
    head = b""
    error: str | None = None
    try:
        async with asyncio.timeout(settings.webhook_timeout_s):
            async with http.stream(
                "POST", url, content=data, headers=headers, follow_redirects=False
            ) as response:
                status = response.status_code
                retry_after = response.headers.get("Retry-After")
                head = await read_head(response, ANSWER_READ_BYTES)
    except TimeoutError:
        error = f"no answer within {settings.webhook_timeout_s:g} s"
    except OutboundError as exc:
        error = f"refused by the outbound policy ({exc.kind})"
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        error = f"the request failed ({type(exc).__name__})"
    latency_ms = round((time.monotonic() - started) * 1000)
    excerpt = printable_excerpt(head, EXCERPT_CHARS) or None if head else None
    if status is None:
        return Answer(Result.FAILED, latency_ms, error=error)
    if 200 <= status < 300:
        return Answer(Result.DELIVERED, latency_ms, status=status, excerpt=excerpt)
    if status == 410:
        return Answer(
            Result.GONE, latency_ms, status=status, error="HTTP 410 Gone", excerpt=excerpt
        )
    reason = f"HTTP {status}"
    if 300 <= status < 400:
        reason += " (redirects are not followed)"
    wait = retry_after_seconds(retry_after, time.time(), MAX_RETRY_AFTER_S)
    return Answer(
        Result.FAILED, latency_ms, status=status, error=reason, excerpt=excerpt, retry_after_s=wait
    )
