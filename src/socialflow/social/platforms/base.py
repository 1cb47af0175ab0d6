"""What every platform adapter does, and the outcomes it reports.

An adapter speaks one platform's HTTP API through the guarded outbound client (a Mastodon
instance or a webhook URL is tenant-chosen). It never logs or raises a token, and the errors it
raises carry the platform's words only in `PublishError.detail`, trimmed, never a credential.

The publish engine relies on the outcome classes:
- `publish` returns a `Receipt` only when the platform accepted the post;
- `PublishError` is a definite "not published" (`retryable` says whether to try again);
- `OutcomeUnknown` means the request may have reached the platform (a timeout after sending,
  a dropped connection): the engine must `lookup` before any resend;
- `lookup` answers a definite `Receipt` (it exists), `None` (it definitely does not), or raises
  `OutcomeUnknown` when it cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class FailureKind(StrEnum):
    RETRYABLE = "retryable"  # timeouts before sending, 429, 5xx: try again later
    AUTH_REVOKED = "auth_revoked"  # the token no longer works: the account needs reconnecting
    CONTENT_REJECTED = "content_rejected"  # the platform refused the text (length, policy)
    MEDIA_REFUSED = "media_refused"  # the platform refused a media file
    DESTINATION_REFUSED = "destination_refused"  # the URL is not allowed (SSRF guard), or gone


class PublishError(Exception):
    """A definite failure: nothing was published by this attempt."""

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail[:500]
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind is FailureKind.RETRYABLE


class OutcomeUnknown(Exception):
    """The request may have reached the platform; only a lookup can tell."""


class ConnectRefused(Exception):
    """Connecting an account failed (a wrong app password, an instance that refused the app):
    `detail` is safe to show the person connecting."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail[:300]


class ReconnectNeeded(Exception):
    """The account's grant is gone (`invalid_grant`, revoked app password): a person must
    connect it again."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an adapter acts with, as stored sealed in the vault (purpose `social_token`).

    `access_token` is sent with every call; `refresh_token` renews it before `expires_at`;
    `client_id` / `client_secret` are a Mastodon app's (per instance); `signing_secret` is a
    webhook destination's `whsec_…`."""

    # Never in a repr (a log line, a traceback's locals).
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Account:
    """A connected account as an adapter sees it: where it lives and who it is."""

    platform: str
    server_url: str  # Mastodon instance, Bluesky PDS, or the webhook's URL
    account_ref: str  # the platform's id: Mastodon account id, Bluesky DID, webhook id
    handle: str
    credentials: Credentials


@dataclass(frozen=True, slots=True)
class OutgoingMedia:
    data: bytes
    content_type: str
    filename: str
    alt_text: str | None = None
    sha256: str | None = None
    url: str | None = None  # a short-lived signed download URL (webhook destinations send it)


@dataclass(frozen=True, slots=True)
class OutgoingPost:
    """Exactly what was approved for one destination."""

    post_id: str
    destination_id: str
    idempotency_key: str  # from post, destination and approved hash: the same on every retry
    text: str
    created_at: datetime  # when the delivery was first attempted: the same on every retry
    media: Sequence[OutgoingMedia] = ()
    first_comment: str | None = None
    labels: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Receipt:
    platform_post_id: str
    url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Found by `lookup` with a part definitely missing (its first comment: the worker died
    # between the two): the adapter's `complete` writes that part.
    incomplete: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    max_characters: int
    max_media: int


@dataclass(frozen=True, slots=True)
class ConnectedIdentity:
    """What connecting an account learnt: who it is and what it may do."""

    account_ref: str
    handle: str
    credentials: Credentials
    scopes: tuple[str, ...] = ()


class PlatformAdapter(Protocol):
    platform: str
    # Whether sending the same post again is harmless by the platform's own contract (a
    # webhook's receiver dedups by webhook-id; a Bluesky record key exists once): after an
    # unknown outcome, the engine may then resend without a definite "no" from `lookup`.
    idempotent_resend: bool

    async def validate(self, account: Account, post: OutgoingPost) -> list[str]:
        """Why the platform would refuse `post` (empty when it would not): text length in the
        platform's own units, media count and types. Reads instance limits when it must."""
        ...

    async def publish(self, account: Account, post: OutgoingPost) -> Receipt:
        """Publish `post` (uploading its media first); raises PublishError or OutcomeUnknown."""
        ...

    async def lookup(self, account: Account, post: OutgoingPost) -> Receipt | None:
        """Whether `post` exists on the platform (by idempotency key or recent posts)."""
        ...

    async def complete(self, account: Account, post: OutgoingPost, found: Receipt) -> Receipt:
        """Write what a post `lookup` found `incomplete` lacks, and nothing else (the post is
        published: a failure here is told in the receipt, never raised as the post's)."""
        ...

    async def delete(self, account: Account, receipt: Receipt) -> None:
        """Remove a published post."""
        ...

    async def refresh(self, account: Account) -> Credentials:
        """New credentials before `expires_at`; ReconnectNeeded when the grant is gone."""
        ...
