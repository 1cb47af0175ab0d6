"""An item's embedding may be `key_invalid` (the tenant's key was refused), as its caption may;
t0004's check constraints get the names the models give them (it named them twice over).

Revision ID: t0005
Revises: t0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "t0005"
down_revision: str | None = "t0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table → the constraints t0004 created, by the name the naming convention gave them twice
_RENAMED = {
    "ai_provider_keys": ("ck_ai_provider_keys_status",),
    "ai_settings": ("ck_ai_settings_hashtag_count",),
    "media_items": ("ck_media_items_caption_state", "ck_media_items_embedding_state"),
}
_EMBEDDING_STATES = (
    "'pending', 'embedded', 'no_text', 'not_configured', 'budget_exceeded', 'failed'"
)


def upgrade() -> None:
    for table, names in _RENAMED.items():
        for name in names:
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT ck_{table}_{name} TO {name}")
    op.drop_constraint(op.f("ck_media_items_embedding_state"), "media_items", type_="check")
    op.create_check_constraint(
        op.f("ck_media_items_embedding_state"),
        "media_items",
        f"embedding_state IN ({_EMBEDDING_STATES}, 'key_invalid')",
    )


def downgrade() -> None:
    op.execute(
        "UPDATE media_items SET embedding_state = 'failed' WHERE embedding_state = 'key_invalid'"
    )
    op.drop_constraint(op.f("ck_media_items_embedding_state"), "media_items", type_="check")
    op.create_check_constraint(
        op.f("ck_media_items_embedding_state"),
        "media_items",
        f"embedding_state IN ({_EMBEDDING_STATES})",
    )
    for table, names in _RENAMED.items():
        for name in names:
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {name} TO ck_{table}_{name}")
