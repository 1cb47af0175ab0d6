"""Schema `extensions` holding pgvector, and the shared schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS extensions")
    op.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA extensions")
    # Tenant sessions resolve `vector` through `<tenant>, extensions`; nobody writes here.
    op.execute("REVOKE CREATE ON SCHEMA extensions FROM PUBLIC")
    op.execute("GRANT USAGE ON SCHEMA extensions TO PUBLIC")


def downgrade() -> None:
    op.execute("DROP EXTENSION IF EXISTS vector")
    op.execute("DROP SCHEMA IF EXISTS extensions")
