"""A scheduled post remembers the billing period its unit of the monthly posts quota was counted
in, so cancelling or editing it gives the unit back to that period, not to whichever period
it is then.

Revision ID: t0009
Revises: t0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "t0009"
down_revision: str | None = "t0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Posts scheduled before this revision keep NULL: theirs is given back to the month it is
    # then, as before.
    op.add_column("posts", sa.Column("quota_period_start", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("posts", "quota_period_start")
