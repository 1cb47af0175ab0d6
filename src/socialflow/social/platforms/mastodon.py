"""The Mastodon adapter: validate, publish, look up, delete and refresh on whichever instance a
tenant names, every call through the guarded outbound client the caller passes.

Connecting an account lives in `mastodon_connect` (re-exported here), calling an instance and
what its failures mean in `mastodon_api`, what an instance accepts in `mastodon_rules`."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from socialflow.social.platforms.base import (
    Account,
    Credentials,
    FailureKind,
    OutcomeUnknown,
    OutgoingMedia,
    OutgoingPost,
    PublishError,
    Receipt,
    ReconnectNeeded,
)
from socialflow.social.platforms.mastodon_api import (
    as_dict,
    client_form,
    expiry,
    failure,
    iso_time,
    json_of,
    normalize_instance_url,
    oauth_error,
    origin_of,
    request,
    token_of,
)
from socialflow.social.platforms.mastodon_connect import (
    authorization_url,
    code_challenge_for,
    exchange_code,
    instance_limits,
    register_app,
)
from socialflow.social.platforms.mastodon_rules import (
    InstanceConfig,
    comparable_text,
    fetch_instance_config,
    mastodon_length,
    refusals,
    status_text,
)

__all__ = [
    "InstanceConfig",
    "MastodonAdapter",
    "authorization_url",
    "code_challenge_for",
    "exchange_code",
    "instance_limits",
    "mastodon_length",
    "normalize_instance_url",
    "register_app",
]

LOOKUP_PAGE = 40  # the most statuses Mastodon answers in one page
LOOKUP_WINDOW = timedelta(minutes=5)  # how far SocialFlow's and the instance's clocks may differ


@dataclass(frozen=True, slots=True)
class _Status:
    id: str
    url: str | None


class MastodonAdapter:
    """The PlatformAdapter of Mastodon (and of instances speaking its API)."""

    platform = "mastodon"
    # Mastodon keeps an Idempotency-Key for one hour only: after an unknown outcome, look up.
    idempotent_resend = False

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        limits_ttl_s: float = 3600.0,
        media_wait_s: float = 120.0,
        media_poll_s: float = 1.0,
        lookup_pages: int = 5,
    ) -> None:
        self._http = http  # guarded by the caller; no request here follows a redirect
        self._limits_ttl_s = limits_ttl_s
        self._media_wait_s = media_wait_s
        self._media_poll_s = media_poll_s
        self._lookup_pages = lookup_pages
        self._configs: dict[str, tuple[float, InstanceConfig]] = {}

    async def instance_config(self, server_url: str) -> InstanceConfig:
        """The instance's limits, read at most once per `limits_ttl_s` per instance."""
        origin = normalize_instance_url(server_url)
        cached = self._configs.get(origin)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        config = await fetch_instance_config(self._http, origin)
        self._configs[origin] = (time.monotonic() + self._limits_ttl_s, config)
        return config

    async def validate(self, account: Account, post: OutgoingPost) -> list[str]:
        """Why the instance would refuse `post`. PublishError when its limits cannot be read:
        guessing them would refuse posts a larger instance takes, or pass ones it refuses."""
        origin = origin_of(account)
        config = await self.instance_config(origin)
        return refusals(config, post, urlsplit(origin).hostname or origin)

    async def publish(self, account: Account, post: OutgoingPost) -> Receipt:
        origin, token = origin_of(account), token_of(account)
        # Media first: a failure there leaves only unattached uploads, which Mastodon removes.
        media_ids = [await self._upload(origin, token, item) for item in post.media]
        status = await self._post_status(
            origin, token, text=post.text, media_ids=media_ids, key=post.idempotency_key
        )
        extra: dict[str, Any] = {}
        if post.first_comment:
            extra["first_comment"] = await self._first_comment(origin, token, post, status.id)
        return Receipt(platform_post_id=status.id, url=status.url, extra=extra)

    async def _upload(self, origin: str, token: str, item: OutgoingMedia) -> str:
        """Upload one file and wait until the instance has processed it (202: not yet)."""
        response = await request(
            self._http,
            "POST",
            f"{origin}/api/v2/media",
            token=token,
            files={"file": (item.filename, item.data, item.content_type)},
            data={"description": item.alt_text} if item.alt_text else None,
        )
        if response.status_code not in (200, 202):
            raise failure(response, token=token, media=True)
        body = as_dict(json_of(response))
        if body.get("id") is None:
            raise PublishError(FailureKind.RETRYABLE, "The instance's media answer is unreadable.")
        media_id = str(body["id"])
        if response.status_code == 202 or not body.get("url"):
            await self._await_processed(origin, token, media_id)
        return media_id

    async def _await_processed(self, origin: str, token: str, media_id: str) -> None:
        deadline = time.monotonic() + self._media_wait_s
        delay = self._media_poll_s
        while True:
            await asyncio.sleep(delay)
            response = await request(
                self._http, "GET", f"{origin}/api/v1/media/{media_id}", token=token
            )
            if response.status_code == 200 and as_dict(json_of(response)).get("url"):
                return
            if response.status_code not in (200, 206):  # 206: Mastodon is still processing
                raise failure(response, token=token, media=True)
            if time.monotonic() + delay > deadline:
                raise PublishError(
                    FailureKind.RETRYABLE, "The instance is still processing a media file."
                )
            delay = min(delay * 2, 5.0)

    async def _post_status(
        self,
        origin: str,
        token: str,
        *,
        text: str,
        media_ids: Sequence[str],
        key: str,
        in_reply_to: str | None = None,
    ) -> _Status:
        body: dict[str, Any] = {"status": text, "visibility": "public"}
        if media_ids:
            body["media_ids"] = list(media_ids)
        if in_reply_to is not None:
            body["in_reply_to_id"] = in_reply_to
        response = await request(
            self._http,
            "POST",
            f"{origin}/api/v1/statuses",
            token=token,
            # Mastodon answers the same key from the same account with the status it created
            # (for an hour) instead of creating another.
            headers={"Idempotency-Key": key},
            json=body,
            sent_means_unknown=True,
        )
        if response.status_code >= 500:
            # A proxy gave up waiting on Mastodon, or Mastodon failed after creating the status
            # (it stores the Idempotency-Key only once the status exists): either may have
            # published it. Only a lookup can tell.
            raise OutcomeUnknown(f"The instance answered HTTP {response.status_code}.")
        if response.status_code != 200:
            raise failure(response, token=token)
        answer = as_dict(json_of(response))
        if answer.get("id") is None:
            raise OutcomeUnknown("The instance accepted the status but its answer is unreadable.")
        return _Status(str(answer["id"]), _url_of(answer))

    async def _first_comment(
        self, origin: str, token: str, post: OutgoingPost, reply_to: str
    ) -> dict[str, Any]:
        """Reply with the first comment. Its outcome is reported, never raised: the post itself
        is published whatever happens to the comment."""
        try:
            status = await self._post_status(
                origin,
                token,
                text=post.first_comment or "",
                media_ids=(),
                key=f"{post.idempotency_key}:comment",
                in_reply_to=reply_to,
            )
        except PublishError as exc:
            return {"outcome": "failed", "kind": exc.kind.value, "detail": exc.detail}
        except OutcomeUnknown as exc:
            return {"outcome": "unknown", "detail": str(exc)}
        return {"outcome": "published", "platform_post_id": status.id, "url": status.url}

    async def lookup(self, account: Account, post: OutgoingPost) -> Receipt | None:
        """Find `post` among the account's statuses by its text and time. None once the pages
        reach statuses older than it could be (or the account's first); OutcomeUnknown when
        `lookup_pages` pages cannot tell or the instance does not answer."""
        try:
            origin, token = origin_of(account), token_of(account)
        except PublishError as exc:
            raise OutcomeUnknown(exc.detail) from exc
        created = post.created_at
        since = (created if created.tzinfo else created.replace(tzinfo=UTC)) - LOOKUP_WINDOW
        wanted = comparable_text(post.text)
        max_id: str | None = None
        for _ in range(self._lookup_pages):
            page = await self._statuses_page(origin, token, account.account_ref, max_id)
            if not page:
                return None
            for status in page:  # newest first
                at = iso_time(status.get("created_at"))
                if at is not None and at < since:
                    return None
                if _is_own_post(status) and status_text(status) == wanted:
                    return Receipt(platform_post_id=str(status["id"]), url=_url_of(status))
            max_id = str(page[-1]["id"])
        raise OutcomeUnknown("The account posted more since then than a lookup reads.")

    async def _statuses_page(
        self, origin: str, token: str, account_ref: str, max_id: str | None
    ) -> list[dict[str, Any]]:
        # A short page does not prove the end (an instance may filter after paging): only an
        # empty one does.
        params = {"limit": str(LOOKUP_PAGE), "exclude_replies": "true"}
        if max_id is not None:
            params["max_id"] = max_id
        url = f"{origin}/api/v1/accounts/{account_ref}/statuses"
        try:
            response = await request(self._http, "GET", url, token=token, params=params)
        except PublishError as exc:
            raise OutcomeUnknown(exc.detail) from exc
        page = json_of(response)
        if response.status_code != 200 or not isinstance(page, list):
            raise OutcomeUnknown(
                f"The instance answered a lookup with HTTP {response.status_code}."
            )
        return [s for s in page if isinstance(s, dict) and s.get("id") is not None]

    async def complete(self, account: Account, post: OutgoingPost, found: Receipt) -> Receipt:
        return found  # `lookup` finds a status by its text and never calls it incomplete

    async def delete(self, account: Account, receipt: Receipt) -> None:
        """Delete the status and its first comment; one already gone counts as deleted."""
        origin, token = origin_of(account), token_of(account)
        comment = as_dict(receipt.extra.get("first_comment")).get("platform_post_id")
        for status_id in (comment, receipt.platform_post_id):
            if not status_id:
                continue
            response = await request(
                self._http, "DELETE", f"{origin}/api/v1/statuses/{status_id}", token=token
            )
            if response.status_code not in (200, 404):
                raise failure(response, token=token)

    async def refresh(self, account: Account) -> Credentials:
        """A new token by the refresh grant; the same credentials without a refresh token
        (Mastodon's tokens usually never expire)."""
        credentials = account.credentials
        if not credentials.refresh_token:
            return credentials
        form = {"grant_type": "refresh_token", "refresh_token": credentials.refresh_token}
        form |= client_form(credentials.client_id, credentials.client_secret)
        response = await request(self._http, "POST", f"{origin_of(account)}/oauth/token", data=form)
        if response.status_code in (400, 401):
            # invalid_grant (revoked or used), invalid_client (the app was removed), or a grant
            # type the instance does not offer: only connecting again helps.
            error = oauth_error(response) or f"HTTP {response.status_code}"
            raise ReconnectNeeded(f"The instance refused to renew the token ({error}).")
        if response.status_code != 200:
            raise failure(response, token=credentials.access_token)
        answer = as_dict(json_of(response))
        token, refresh = answer.get("access_token"), answer.get("refresh_token")
        if not isinstance(token, str) or not token:
            raise PublishError(FailureKind.RETRYABLE, "The instance's token answer is unreadable.")
        return dataclasses.replace(
            credentials,
            access_token=token,
            refresh_token=refresh if isinstance(refresh, str) else credentials.refresh_token,
            expires_at=expiry(answer),
        )


def _url_of(status: dict[str, Any]) -> str | None:
    url = status.get("url") or status.get("uri")
    # Shown to tenants as a link: only a web address, never javascript: or data:.
    if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
        return None
    return url[:2048]


def _is_own_post(status: dict[str, Any]) -> bool:
    # A boost is someone else's post; a reply (a thread, a first comment) is never the post.
    return not status.get("reblog") and not status.get("in_reply_to_id")
