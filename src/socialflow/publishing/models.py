"""Posts, their media, destinations (one delivery each) and review thread, in every tenant's
schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import TenantBase

POST_STATES = (
    "draft",
    "pending_review",
    "changes_requested",
    "approved",
    "scheduled",
    "publishing",
    "published",
    "partially_published",
    "failed",
    "unconfirmed",
    "cancelled",
)
# One delivery per destination. `sending` is recorded before the platform is called.
DELIVERY_STATES = (
    "pending",
    "sending",
    "retrying",
    "published",
    "failed",
    "unconfirmed",
    "cancelled",
)
COMMENT_KINDS = ("comment", "approved", "changes_requested", "approval_cleared")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=conv(name))


class Post(TenantBase):
    """What will be published, where and when, and where it stands.

    `version` is bumped by every change that makes a due event stale (an edit, a reschedule, a
    cancel): the due event carries the version it was written for. `approved_sha256` binds the
    approval to exactly what was approved (publishing.content.approval_hash)."""

    __tablename__ = "posts"
    __table_args__ = (
        _one_of("status", POST_STATES, "ck_posts_status"),
        Index("ix_posts_created", "created_at", "id"),
        Index("ix_posts_status_scheduled", "status", "scheduled_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    status: Mapped[str] = mapped_column(String(24), server_default=sql("'draft'"))
    version: Mapped[int] = mapped_column(Integer, server_default=sql("1"))
    text: Mapped[str] = mapped_column(Text, server_default=sql("''"))
    first_comment: Mapped[str | None] = mapped_column(Text)
    labels: Mapped[list[str]] = mapped_column(ARRAY(String(50)), server_default=sql("'{}'"))
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approved_sha256: Mapped[str | None] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(80))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_by: Mapped[str | None] = mapped_column(String(80))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(80))
    edited_by: Mapped[str | None] = mapped_column(String(80))  # an author too (self-approval)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    publish_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The billing period scheduling counted its unit of the monthly posts quota in: a
    # give-back goes to that period.
    quota_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PostMedia(TenantBase):
    """A post's media items, in order."""

    __tablename__ = "post_media"

    post_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    media_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("media_items.id", ondelete="RESTRICT"), index=True
    )


class PostDestination(TenantBase):
    """One destination of a post (a connected account), its overrides, and its delivery."""

    __tablename__ = "post_destinations"
    __table_args__ = (
        _one_of("state", DELIVERY_STATES, "ck_post_destinations_state"),
        Index("uq_post_destinations_account", "post_id", "account_id", unique=True),
        # The watchdog's scan: deliveries still sending.
        Index(
            "ix_post_destinations_sending",
            "sending_since",
            postgresql_where=sql("state = 'sending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    post_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("posts.id", ondelete="CASCADE")
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("social_accounts.id", ondelete="RESTRICT"), index=True
    )
    position: Mapped[int] = mapped_column(SmallInteger)
    override_text: Mapped[str | None] = mapped_column(Text)
    override_media: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(UUID(as_uuid=True)))
    variant_profile: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16), server_default=sql("'pending'"))
    # Derived from post, destination and approved hash: the same on every attempt.
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, server_default=sql("0"))
    lookups: Mapped[int] = mapped_column(Integer, server_default=sql("0"))  # of unknown outcomes
    first_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sending_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    platform_post_id: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str | None] = mapped_column(String(2048))
    receipt: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_kind: Mapped[str | None] = mapped_column(String(24))
    error_detail: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PostComment(TenantBase):
    """The review thread: comments, approvals and requests for changes."""

    __tablename__ = "post_comments"
    __table_args__ = (
        _one_of("kind", COMMENT_KINDS, "ck_post_comments_kind"),
        Index("ix_post_comments_post", "post_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    post_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("posts.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(20), server_default=sql("'comment'"))
    body: Mapped[str] = mapped_column(Text, server_default=sql("''"))
    author: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
