"""Request and response bodies of posts and their review."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

PostText = Annotated[str, msgspec.Meta(max_length=10_000, pattern=r"^[^\x00]*$")]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=50, pattern=r"^[^\x00-\x1f\x7f]+$")]
Profile = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[a-z0-9_]+$")]
MediaIds = Annotated[list[uuid.UUID], msgspec.Meta(max_length=20)]


class DestinationIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A connected account to publish to, and what differs there (all optional)."""

    account_id: uuid.UUID
    text: PostText | None = None
    media_ids: MediaIds | None = None
    variant_profile: Profile | None = None


Destinations = Annotated[list[DestinationIn], msgspec.Meta(max_length=20)]


class PostCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    text: PostText = ""
    media_ids: MediaIds = msgspec.field(default_factory=list)
    destinations: Destinations = msgspec.field(default_factory=list)
    first_comment: PostText | None = None
    labels: Annotated[list[Label], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )
    # With an offset, or local to the tenant's time zone (settings) without one.
    scheduled_at: datetime | None = None


class PostPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    text: PostText | msgspec.UnsetType = msgspec.UNSET
    media_ids: MediaIds | msgspec.UnsetType = msgspec.UNSET
    destinations: Destinations | msgspec.UnsetType = msgspec.UNSET
    first_comment: PostText | msgspec.UnsetType | None = msgspec.UNSET
    labels: Annotated[list[Label], msgspec.Meta(max_length=20)] | msgspec.UnsetType = msgspec.UNSET
    scheduled_at: datetime | msgspec.UnsetType | None = msgspec.UNSET


class ReviewComment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=5000, pattern=r"^[^\x00]*$")]


class ApprovalIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    comment: Annotated[str, msgspec.Meta(max_length=5000, pattern=r"^[^\x00]*$")] | None = None


class DeliveryResolution(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A person's decision on an unconfirmed delivery: they looked on the platform.

    `published` (with the post's `url` there, and its id if known); `not_published` (it is
    not there: the delivery fails); `send_again` (it is not there: one more attempt now)."""

    outcome: Literal["published", "not_published", "send_again"]
    url: (
        Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s\x00\"'<>\\]+$")]
        | None
    ) = None
    platform_post_id: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]
        | None
    ) = None
    note: Annotated[str, msgspec.Meta(max_length=500, pattern=r"^[^\x00]*$")] | None = None


class DeliveryOut(msgspec.Struct, kw_only=True):
    """A destination and its delivery."""

    id: str
    account_id: str
    platform: str
    handle: str
    text: str | None
    media_ids: list[str] | None
    variant_profile: str | None
    state: str
    attempts: int
    platform_post_id: str | None = None
    url: str | None = None
    error_kind: str | None = None
    error_detail: str | None = None
    published_at: datetime | None = None
    next_attempt_at: datetime | None = None


class PostOut(msgspec.Struct, kw_only=True):
    id: str
    status: str
    version: int
    text: str
    media_ids: list[str]
    destinations: list[DeliveryOut]
    first_comment: str | None
    labels: list[str]
    scheduled_at: datetime | None
    scheduled_local: str | None  # the schedule in the tenant's time zone
    content_sha256: str  # what an approval of the post as it is now would bind to
    approved_sha256: str | None
    approved_by: str | None
    approved_at: datetime | None
    submitted_by: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class PostSummary(msgspec.Struct, kw_only=True):
    id: str
    status: str
    text: str
    scheduled_at: datetime | None
    destinations: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class PostList(msgspec.Struct):
    items: list[PostSummary]
    next_cursor: str | None = None


class CommentOut(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    body: str
    author: str
    created_at: datetime


class CommentList(msgspec.Struct):
    items: list[CommentOut]
