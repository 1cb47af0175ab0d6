"""Calling a Mastodon instance: its address, one request, and what each failure means to the
publish engine (PublishError, or OutcomeUnknown once a request that changes something went out)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from socialflow.lib.outbound import OutboundError, OutboundRefused
from socialflow.social.platforms.base import (
    Account,
    FailureKind,
    OutcomeUnknown,
    PublishError,
)

_OAUTH_ERROR_CODE = frozenset("abcdefghijklmnopqrstuvwxyz_")


def normalize_instance_url(url: str) -> str:
    """`scheme://host[:port]` of an instance; https unless the URL says http (the guarded client
    decides whether http may be reached). ValueError for anything else (a path, credentials)."""
    raw = url.strip()
    if "://" not in raw:
        raw = f"https://{raw}"
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError("an instance address uses https")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("an instance address has no credentials, query or fragment")
    if parts.path not in ("", "/") or not parts.hostname:
        raise ValueError("an instance address is a host name only, like https://mastodon.social")
    port = parts.port  # ValueError when it is not a port
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def origin_of(account: Account) -> str:
    try:
        return normalize_instance_url(account.server_url)
    except ValueError as exc:
        raise PublishError(FailureKind.DESTINATION_REFUSED, str(exc)) from exc


def token_of(account: Account) -> str:
    token = account.credentials.access_token
    if not token:
        raise PublishError(FailureKind.AUTH_REVOKED, "The account has no access token.")
    return token


async def request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    sent_means_unknown: bool = False,
    **options: Any,
) -> httpx.Response:
    """Send one request. A failure before anything was sent is a PublishError; after sending,
    OutcomeUnknown when `sent_means_unknown` (the request may have changed something).

    The guard raises OutboundTimeout only while reading an answer, and a connect timeout is
    httpx's ConnectTimeout: so only the connect errors below mean "nothing was sent"."""
    sent_headers = {"Accept": "application/json", **(headers or {})}
    if token:
        sent_headers["Authorization"] = f"Bearer {token}"
    try:
        return await http.request(
            method, url, headers=sent_headers, follow_redirects=False, **options
        )
    except OutboundRefused as exc:
        raise PublishError(
            FailureKind.DESTINATION_REFUSED, "The instance's address may not be reached."
        ) from exc
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise PublishError(
            FailureKind.RETRYABLE, f"The instance could not be reached ({type(exc).__name__})."
        ) from exc
    except (httpx.RequestError, OutboundError) as exc:
        # A read or write timeout, a dropped connection, an answer the guard stopped reading.
        reason = f"The instance's answer was lost ({type(exc).__name__})."
        if sent_means_unknown:
            raise OutcomeUnknown(reason) from exc
        raise PublishError(FailureKind.RETRYABLE, reason) from exc


def json_of(response: httpx.Response) -> Any:
    """The answer's JSON; None when it is not JSON (a proxy's HTML error page)."""
    try:
        return response.json()
    except ValueError:
        return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def error_text(response: httpx.Response) -> str:
    """Mastodon's `error` string (what it says went wrong), trimmed; empty when absent."""
    error = as_dict(json_of(response)).get("error")
    return error.strip()[:300] if isinstance(error, str) else ""


def oauth_error(response: httpx.Response) -> str:
    """The OAuth error code (`invalid_grant`…), only when it looks like one."""
    code = error_text(response)
    return code if 0 < len(code) <= 40 and set(code) <= _OAUTH_ERROR_CODE else ""


def failure(response: httpx.Response, *, token: str | None, media: bool = False) -> PublishError:
    """What an answer other than success means, with the instance's `error` as detail."""
    status = response.status_code
    said = error_text(response)
    if token:
        said = said.replace(token, "[token]")  # an instance should never echo it; never pass it on
    detail = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    kind = FailureKind.RETRYABLE  # 5xx, 408, and 429 (with its wait)
    retry_after: float | None = None
    if status in (401, 403):
        kind = FailureKind.AUTH_REVOKED
    elif status == 429:
        retry_after = retry_after_s(response)
    elif status in (404, 410) or 300 <= status < 400:
        kind = FailureKind.DESTINATION_REFUSED  # no Mastodon API there (any more)
    elif 400 <= status < 500 and status != 408:
        kind = FailureKind.MEDIA_REFUSED if media else FailureKind.CONTENT_REJECTED
    return PublishError(kind, detail, status=status, retry_after_s=retry_after)


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds until a rate limit resets: Mastodon's X-RateLimit-Reset (ISO 8601), measured from
    the answer's own Date so that a skewed clock does not count, else Retry-After."""
    now = _http_date(response.headers.get("Date")) or datetime.now(UTC)
    reset = iso_time(response.headers.get("X-RateLimit-Reset"))
    if reset is not None:
        return max(0.0, (reset - now).total_seconds())
    after = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(after))
    except ValueError:
        at = _http_date(after)
    return max(0.0, (at - now).total_seconds()) if at is not None else None


def iso_time(value: Any) -> datetime | None:
    """An ISO 8601 time as Mastodon writes them ("2024-05-01T12:00:00.000Z"), always aware."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def expiry(token_answer: Mapping[str, Any]) -> datetime | None:
    """When a token from an OAuth token answer expires (`expires_in`); None: it does not."""
    expires_in = positive_int(token_answer.get("expires_in"))
    return datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in else None


def client_form(client_id: str | None, client_secret: str | None) -> dict[str, str]:
    """The app's credentials as the token endpoint takes them in its form."""
    form = {"client_id": client_id} if client_id else {}
    return form | ({"client_secret": client_secret} if client_secret else {})
