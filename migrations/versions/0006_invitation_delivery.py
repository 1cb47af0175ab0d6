"""Invitations: who invited, and when the email went out.

The token itself is minted by the email job (its hash replaces a placeholder), so the secret
never passes through the outbox.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("invitations", sa.Column("invited_by", UUID(as_uuid=True)), schema="shared")
    op.add_column("invitations", sa.Column("sent_at", sa.DateTime(timezone=True)), schema="shared")


def downgrade() -> None:
    op.drop_column("invitations", "sent_at", schema="shared")
    op.drop_column("invitations", "invited_by", schema="shared")
