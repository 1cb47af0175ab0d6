"""A social account's token refresh is leased, not locked: the worker that refreshes marks the
row until when it may be at it, commits, and calls the platform with no transaction open. The
others wait for the new credentials, or take the refresh over once the lease has run out.

Revision ID: t0011
Revises: t0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "t0011"
down_revision: str | None = "t0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("social_accounts", sa.Column("refresh_lease_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("social_accounts", "refresh_lease_until")
