"""A member may be made a reviewer (approves posts whatever their role).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: no table rewrite (PostgreSQL 11+), the lock is brief.
    op.add_column(
        "memberships",
        sa.Column("reviewer", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        schema="shared",
    )


def downgrade() -> None:
    op.drop_column("memberships", "reviewer", schema="shared")
