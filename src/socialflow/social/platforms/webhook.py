"""The signed-webhook destination: a post delivered as a Standard Webhooks POST to a tenant's URL.

One delivery is one POST of a JSON event, signed with the destination's `whsec_` secret
(`lib.webhook_signing`). Its `webhook-id` is the post's idempotency key, the same on every
attempt, so a receiver that dedups by it (as the spec asks) sees a resend as the same delivery:
that is why `idempotent_resend` holds, and why `lookup`, which cannot ask a receiver anything,
answers "unknown" and lets the engine resend.

What an attempt's failure means for the engine:
- nothing was sent (refused address, connect error or timeout, a write that never finished):
  a definite `PublishError`;
- sent, but no status came back (a read timeout, a dropped connection): `OutcomeUnknown`;
- a status came back: it decides, whatever happened to the body after it.
The receiver's answer is read only as far as `ANSWER_READ_BYTES`: its `id` and `url`, or an
error's excerpt, sit at its start, and a huge answer is never held in memory.
"""

from __future__ import annotations

import ipaddress
import json
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

import httpx

from socialflow.lib import webhook_signing
from socialflow.lib.outbound import (
    OutboundError,
    OutboundPolicy,
    OutboundRefused,
    OutboundResponseRefused,
    OutboundResponseTooLarge,
    OutboundTooManyRedirects,
    address_allowed,
)
from socialflow.lib.outbound_http import (
    GuardedTransport,
    printable_excerpt,
    read_head,
    retry_after_seconds,
)
from socialflow.social.platforms.base import (
    Account,
    Credentials,
    FailureKind,
    OutcomeUnknown,
    OutgoingPost,
    PublishError,
    Receipt,
)

USER_AGENT = "SocialFlow-Webhooks/1.0"
ANSWER_READ_BYTES = 64 * 1024
EXCERPT_CHARS = 200
MAX_RETRY_AFTER_S = 24 * 3600.0  # a receiver's Retry-After beyond a day is not taken literally
_MAX_REF_CHARS = 200  # a receiver's `id`; it also becomes part of a deletion's webhook-id
_MAX_URL_CHARS = 2048

# Not sent at all: the request never left, or never left whole (its Content-Length was not
# reached, so no receiver can have acted on it).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: httpx.Headers
    head: bytes  # the body's first ANSWER_READ_BYTES at most


class WebhookAdapter:
    """Publishes to a tenant's webhook URL through the guarded client it is given (built with
    `max_redirects=0`; this adapter follows no redirect whatever the client's options)."""

    platform = "webhook"
    idempotent_resend = True

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        policy: OutboundPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        # `validate` judges a URL's shape by the policy the client's transport enforces.
        self._policy = policy or _policy_of(http)
        self._clock = clock

    async def validate(self, account: Account, post: OutgoingPost) -> list[str]:
        reasons: list[str] = []
        url_problem = _url_problem(account.server_url, self._policy)
        if url_problem is not None:
            reasons.append(url_problem)
        if not account.credentials.signing_secret:
            reasons.append("The webhook destination has no signing secret.")
        if not post.text.strip() and not post.media:
            reasons.append("A webhook post needs text or media.")
        reasons.extend(
            f"Media {index} has no download URL to send."
            for index, media in enumerate(post.media, start=1)
            if not media.url
        )
        return reasons

    async def publish(self, account: Account, post: OutgoingPost) -> Receipt:
        missing = [index for index, media in enumerate(post.media, start=1) if not media.url]
        if missing:
            raise PublishError(
                FailureKind.MEDIA_REFUSED, f"media {missing[0]} has no download URL to send"
            )
        event = {
            "type": "post.published",
            "timestamp": _iso(post.created_at),  # the first attempt's: every resend is identical
            "data": {
                "post_id": post.post_id,
                "destination_id": post.destination_id,
                "text": post.text,
                "first_comment": post.first_comment,
                "labels": list(post.labels),
                "media": [
                    {
                        "url": media.url,
                        "content_type": media.content_type,
                        "alt_text": media.alt_text,
                        "sha256": media.sha256,
                        "filename": media.filename,
                    }
                    for media in post.media
                ],
            },
        }
        webhook_id = post.idempotency_key
        answer = await self._deliver(account, webhook_id, event)
        found = _json_object(answer.head)
        reference = found.get("id")
        url = found.get("url")
        return Receipt(
            platform_post_id=reference if _is_reference(reference) else webhook_id,
            url=url if _is_web_url(url) else None,
            # `delete` receives only the receipt: what its event names travels in it.
            extra={
                "webhook_id": webhook_id,
                "post_id": post.post_id,
                "destination_id": post.destination_id,
            },
        )

    async def lookup(self, account: Account, post: OutgoingPost) -> Receipt | None:
        raise OutcomeUnknown(
            "a webhook receiver cannot be asked about a delivery; resend it with the same "
            "webhook-id (receivers dedup by it)"
        )

    async def complete(self, account: Account, post: OutgoingPost, found: Receipt) -> Receipt:
        return found  # `lookup` finds nothing here, let alone an incomplete post

    async def delete(self, account: Account, receipt: Receipt) -> None:
        event = {
            "type": "post.deleted",
            "timestamp": _iso(datetime.fromtimestamp(self._clock(), UTC)),
            "data": {
                "post_id": receipt.extra.get("post_id"),
                "destination_id": receipt.extra.get("destination_id"),
                "platform_post_id": receipt.platform_post_id,
            },
        }
        await self._deliver(account, f"{receipt.platform_post_id}:deleted", event)

    async def refresh(self, account: Account) -> Credentials:
        return account.credentials  # a signing secret does not expire; rotating it is explicit

    async def _deliver(self, account: Account, webhook_id: str, event: dict[str, Any]) -> _Answer:
        """POST `event` signed; the 2xx answer, or the failure its outcome means."""
        url_problem = _url_problem(account.server_url, self._policy)
        if url_problem is not None:
            raise PublishError(FailureKind.DESTINATION_REFUSED, url_problem)
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {
            **_signed_headers(account.credentials, webhook_id, int(self._clock()), body),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        answer: _Answer | None = None
        try:
            async with self._http.stream(
                "POST", account.server_url, content=body, headers=headers, follow_redirects=False
            ) as response:
                answer = _Answer(
                    response.status_code,
                    response.headers,
                    await read_head(response, ANSWER_READ_BYTES),
                )
        except (httpx.HTTPError, httpx.InvalidURL, OutboundError) as exc:
            if answer is None:  # else only closing the answered stream failed: the status stands
                raise _failure_before_status(exc) from exc
        if 200 <= answer.status < 300:
            return answer
        raise _failure_of_status(answer, self._clock())


def _signed_headers(
    credentials: Credentials, webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    if not credentials.signing_secret:
        raise PublishError(
            FailureKind.AUTH_REVOKED, "the webhook destination has no signing secret"
        )
    try:
        return webhook_signing.headers([credentials.signing_secret], webhook_id, timestamp, body)
    except webhook_signing.InvalidSigningSecret as exc:
        # Its message never holds the secret; the destination needs a new one.
        raise PublishError(FailureKind.AUTH_REVOKED, str(exc)) from None


def _failure_before_status(exc: Exception) -> PublishError | OutcomeUnknown:
    """What an error with no status means: refused, not sent, or sent with no answer."""
    if isinstance(exc, OutboundRefused | OutboundTooManyRedirects | httpx.InvalidURL):
        return PublishError(
            FailureKind.DESTINATION_REFUSED, f"the webhook URL may not be called ({_kind(exc)})"
        )
    if isinstance(exc, httpx.UnsupportedProtocol):
        return PublishError(FailureKind.DESTINATION_REFUSED, "the webhook URL's scheme is refused")
    if isinstance(exc, _NOT_SENT):
        return PublishError(
            FailureKind.RETRYABLE, f"the webhook receiver was not reached ({_kind(exc)})"
        )
    if isinstance(exc, OutboundResponseTooLarge | OutboundResponseRefused):
        # The guard refused the answer's head (its announced size, its encoding): the receiver
        # answered, with a status the guard kept. Trying again is harmless (same webhook-id).
        return PublishError(
            FailureKind.RETRYABLE, f"the webhook receiver's answer was refused ({_kind(exc)})"
        )
    # A read timeout, a reset or a close after the request went out: it may have been acted on.
    return OutcomeUnknown(f"the webhook receiver did not answer ({_kind(exc)})")


def _failure_of_status(answer: _Answer, now: float) -> PublishError:
    status = answer.status
    said = printable_excerpt(answer.head, EXCERPT_CHARS)
    detail = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if 300 <= status < 400:
        return PublishError(
            FailureKind.DESTINATION_REFUSED,
            f"the webhook receiver redirected (HTTP {status}); redirects are not followed",
            status=status,
        )
    if status == 410:
        return PublishError(
            FailureKind.DESTINATION_REFUSED,
            f"the webhook destination is gone ({detail})"[:EXCERPT_CHARS],
            status=status,
        )
    if status in (408, 429) or status >= 500 or status < 200:
        return PublishError(
            FailureKind.RETRYABLE,
            detail[:EXCERPT_CHARS],
            status=status,
            retry_after_s=retry_after_seconds(
                answer.headers.get("Retry-After"), now, MAX_RETRY_AFTER_S
            ),
        )
    return PublishError(FailureKind.CONTENT_REJECTED, detail[:EXCERPT_CHARS], status=status)


def _kind(exc: Exception) -> str:
    # The guard's kinds are safe to show; httpx's class name says enough (its message can name
    # the URL, which is the tenant's own but is not needed here).
    return exc.kind if isinstance(exc, OutboundError) else type(exc).__name__


def _json_object(head: bytes) -> Mapping[str, object]:
    try:
        found = json.loads(head)
    except (ValueError, RecursionError):  # not JSON, or cut short at ANSWER_READ_BYTES
        return {}
    return found if isinstance(found, dict) else {}


def _is_reference(value: object) -> TypeGuard[str]:
    # Visible ASCII only: it is stored, shown and becomes part of a deletion's webhook-id.
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_REF_CHARS
        and all("!" <= c <= "~" for c in value)
    )


def _is_web_url(value: object) -> TypeGuard[str]:
    if not isinstance(value, str) or len(value) > _MAX_URL_CHARS:
        return False
    if not all("!" <= c <= "~" for c in value):
        return False  # spaces, control characters or unencoded non-ASCII: not a URL to show
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _url_problem(url: str, policy: OutboundPolicy) -> str | None:
    """Why `url` may not be called, judged without DNS (the guard judges the addresses a name
    resolves to at every connection); None when its shape is allowed."""
    if not url or any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return "The webhook URL must not be empty or contain spaces or control characters."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on an invalid port
    except ValueError:
        return "The webhook URL is not a valid URL."
    if parts.scheme not in policy.schemes:
        return f"The webhook URL must use {' or '.join(sorted(policy.schemes))}."
    if not parts.hostname or "@" in parts.netloc:
        return "The webhook URL needs a host and no credentials."
    if _literal_address_refused(parts.hostname, policy):
        return (
            "The webhook URL's address is private, loopback, link-local or otherwise not public, "
            "which tenants may not reach."
        )
    return None


def _literal_address_refused(host: str, policy: OutboundPolicy) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: the addresses it resolves to are checked when it is called
    return not address_allowed(address, policy.allowed_networks)


def _policy_of(http: httpx.AsyncClient) -> OutboundPolicy:
    # httpx has no public accessor for a client's transport; a client that is not guarded gets
    # the strictest shape rules (the default policy: https only).
    transport = getattr(http, "_transport", None)
    return transport.policy if isinstance(transport, GuardedTransport) else OutboundPolicy()


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # stored times are UTC
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
