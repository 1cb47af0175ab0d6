"""Plans and entitlements: the catalogue, per-tenant overrides and billing anchor, monthly
usage, quota notices; tenants' plans must be in the catalogue.

A database with tenants gets the plans they are on (with the limits the settings gave them
until now), so the foreign key holds; an empty one gets PLAN_CATALOGUE's plans on first start.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "shared"
GIB = 1024**3
# The plans tenants could have before the catalogue, with the limits they had (requests a
# minute, the platform's AI keys) and the catalogue's first defaults for the rest:
# name → seats, storage, media, posts, AI $, accounts, webhooks, rpm, retention, platform keys.
LEGACY_PLANS = {
    "free": ("Free", 3, 1 * GIB, 500, 30, 1, 2, 1, 300, 7, False),
    "starter": ("Starter", 10, 25 * GIB, 5_000, 300, 20, 5, 5, 1_200, 30, False),
    "pro": ("Pro", 50, 250 * GIB, 50_000, 3_000, 200, 25, 20, 6_000, 90, True),
    "enterprise": ("Enterprise", None, None, None, None, None, None, None, 30_000, 365, True),
}
COLUMNS = (
    "display_name",
    "seats",
    "storage_bytes",
    "media_items",
    "posts_per_month",
    "ai_spend_usd_per_month",
    "social_accounts",
    "webhook_endpoints",
    "api_requests_per_minute",
    "event_retention_days",
    "platform_ai_keys",
)


def _created_at() -> sa.Column[sa.DateTime]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def _updated_at() -> sa.Column[sa.DateTime]:
    return sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def _tenant_id() -> sa.Column[UUID]:
    return sa.Column(
        "tenant_id",
        UUID(as_uuid=True),
        sa.ForeignKey("shared.tenants.id", ondelete="CASCADE"),
        primary_key=True,
    )


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def upgrade() -> None:
    limits = COLUMNS[1:8]  # what may be NULL (unlimited)
    op.create_table(
        "plans",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("seats", sa.Integer()),
        sa.Column("storage_bytes", sa.BigInteger()),
        sa.Column("media_items", sa.Integer()),
        sa.Column("posts_per_month", sa.Integer()),
        sa.Column("ai_spend_usd_per_month", sa.Numeric(12, 2)),
        sa.Column("social_accounts", sa.Integer()),
        sa.Column("webhook_endpoints", sa.Integer()),
        sa.Column("api_requests_per_minute", sa.Integer(), nullable=False),
        sa.Column("event_retention_days", sa.Integer(), nullable=False),
        sa.Column("platform_ai_keys", sa.Boolean(), nullable=False),
        _created_at(),
        _updated_at(),
        sa.CheckConstraint("name ~ '^[a-z][a-z0-9_-]{0,31}$'", name="ck_plans_name"),
        sa.CheckConstraint(
            " AND ".join(f"({c} IS NULL OR {c} >= 0)" for c in limits)
            + " AND api_requests_per_minute >= 1 AND event_retention_days >= 1",
            name="ck_plans_limits",
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "tenant_entitlements",
        _tenant_id(),
        sa.Column("overrides", JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("billing_anchor_day", sa.SmallInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True)),
        sa.Column("period_end", sa.DateTime(timezone=True)),
        _updated_at(),
        sa.CheckConstraint(
            "billing_anchor_day BETWEEN 1 AND 31", name="ck_tenant_entitlements_anchor"
        ),
        sa.CheckConstraint(
            "jsonb_typeof(overrides) = 'object'", name="ck_tenant_entitlements_overrides"
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "tenant_usage",
        _tenant_id(),
        sa.Column("resource", sa.String(40), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("used", sa.Numeric(20, 6), nullable=False, server_default=sa.text("0")),
        _updated_at(),
        sa.CheckConstraint("used >= 0", name="ck_tenant_usage_used"),
        schema=SCHEMA,
    )
    op.create_table(
        "quota_notices",
        _tenant_id(),
        sa.Column("resource", sa.String(40), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        _created_at(),
        schema=SCHEMA,
    )

    # The plans existing tenants are on (any other name they carry gets the free plan's
    # limits): plain SQL, so the revision also renders offline.
    legacy = ", ".join(
        "(" + ", ".join(_literal(v) for v in (name, *values)) + ")"
        for name, values in LEGACY_PLANS.items()
    )
    known = ", ".join(_literal(n) for n in LEGACY_PLANS)
    picked = ", ".join(f"l.{c}" for c in COLUMNS[1:])
    insert = (
        f"INSERT INTO shared.plans (name, {', '.join(COLUMNS)}) "  # noqa: S608 - constants
        "SELECT used.plan, CASE WHEN l.name = used.plan THEN l.display_name ELSE used.plan END, "
        f"{picked} FROM (SELECT DISTINCT plan FROM shared.tenants) used "
        f"JOIN (VALUES {legacy}) AS l(name, {', '.join(COLUMNS)}) "
        f"ON l.name = CASE WHEN used.plan IN ({known}) THEN used.plan ELSE 'free' END"
    )
    op.execute(insert)
    op.create_foreign_key(
        "fk_tenants_plan_plans",
        "tenants",
        "plans",
        ["plan"],
        ["name"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
    )
    # One open invitation per person and tenant (an open invitation holds a seat): the
    # newest of any duplicates stays.
    op.execute(
        "DELETE FROM shared.invitations i USING shared.invitations newer "
        "WHERE i.accepted_at IS NULL AND newer.accepted_at IS NULL "
        "AND newer.tenant_id = i.tenant_id AND newer.user_id = i.user_id "
        "AND (newer.created_at, newer.id) > (i.created_at, i.id)"
    )
    op.create_index(
        "uq_invitations_pending",
        "invitations",
        ["tenant_id", "user_id"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("accepted_at IS NULL"),
    )
    # Existing tenants are billed from the day of the month they were created.
    op.execute(
        "INSERT INTO shared.tenant_entitlements (tenant_id, billing_anchor_day) "
        "SELECT id, extract(day FROM created_at AT TIME ZONE 'UTC')::int FROM shared.tenants"
    )


def downgrade() -> None:
    op.drop_index("uq_invitations_pending", "invitations", schema=SCHEMA)
    op.drop_constraint("fk_tenants_plan_plans", "tenants", schema=SCHEMA, type_="foreignkey")
    for table in ("quota_notices", "tenant_usage", "tenant_entitlements", "plans"):
        op.drop_table(table, schema=SCHEMA)
