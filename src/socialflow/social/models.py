"""Connected social accounts and per-instance OAuth apps, in every tenant's schema."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.naming import conv

from socialflow.db.base import SharedBase, TenantBase
from socialflow.lib.outbound import url_origin

PLATFORMS = ("mastodon", "bluesky", "webhook")
ACCOUNT_STATUSES = ("active", "needs_reconnect", "disconnected")


class SocialAccount(TenantBase):
    """An account the tenant publishes to. Its credentials are sealed by the vault (purpose
    `social_token`, bound to this row's id) and never leave the process that opens them."""

    __tablename__ = "social_accounts"
    __table_args__ = (
        CheckConstraint(
            f"platform IN ({', '.join(repr(p) for p in PLATFORMS)})",
            name=conv("ck_social_accounts_platform"),
        ),
        CheckConstraint(
            f"status IN ({', '.join(repr(s) for s in ACCOUNT_STATUSES)})",
            name=conv("ck_social_accounts_status"),
        ),
        # One live connection per account: connecting it again renews its credentials.
        Index(
            "uq_social_accounts_live",
            "platform",
            "server_url",
            "account_ref",
            unique=True,
            postgresql_where=sql("status <> 'disconnected'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    server_url: Mapped[str] = mapped_column(String(2048))
    account_ref: Mapped[str] = mapped_column(String(255))
    handle: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), server_default=sql("'active'"))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(100)), server_default=sql("'{}'"))
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    # Bumped by every refresh: a publish that read older credentials refreshes no more.
    credentials_version: Mapped[int] = mapped_column(Integer, server_default=sql("1"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_reason: Mapped[str | None] = mapped_column(Text)
    connected_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    refreshed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A worker refreshing the token until then (publishing/engine.py `fresh_account`).
    refresh_lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disconnected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SocialApp(TenantBase):
    """The tenant's OAuth app on one Mastodon instance (registered on first connect); its
    client secret sealed by the vault (purpose `social_app`)."""

    __tablename__ = "social_apps"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    server_url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    redirect_uri: Mapped[str] = mapped_column(String(2048), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OAuthState(SharedBase):
    """A connect flow under way: found by the callback (which has no tenant in its path) by a
    digest of its state, used once, and only before it expires. The PKCE verifier is sealed
    under the tenant's data key (purpose `oauth_pkce`)."""

    __tablename__ = "oauth_states"

    state_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("shared.tenants.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    platform: Mapped[str] = mapped_column(String(16))
    server_url: Mapped[str] = mapped_column(String(2048))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    code_verifier: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def shown_handle(handle: str, server_url: str) -> str:
    """What lists, posts and events show as an account's handle. A webhook destination
    connected without a name before handles were made from its URL's origin kept its whole URL,
    whose path or query may hold a token: its origin is shown instead."""
    return url_origin(server_url) if handle == server_url else handle
