"""An AI ledger row remembers the billing period its reservation counted in, so a release
(a delivery that died mid-call) gives the reservation back to that period, not to the one the
row's time falls in under today's anchor day and time zone.

Revision ID: t0010
Revises: t0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "t0010"
down_revision: str | None = "t0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before this revision keep NULL: theirs is given back to the period holding
    # their time, as before.
    op.add_column("ai_usage", sa.Column("period_start", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("ai_usage", "period_start")
