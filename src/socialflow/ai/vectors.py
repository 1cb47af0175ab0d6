"""The tenant's vector column: typed `vector(N)` for its embedding model's dimension, re-typed
(and emptied) when the model changes, so vectors of two models never sit side by side.

The tables belong to the media library, a layer above: named in SQL, not imported (as
plans.limits counts them)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Vectors of the old model go; the column takes the new dimension (the table is empty).
_EMPTY = text("TRUNCATE media_embeddings")
# Every live item is to be embedded again.
_PENDING = text(
    "WITH marked AS (UPDATE media_items SET embedding_state = 'pending', embedding_reason = NULL "
    "WHERE deleted_at IS NULL AND status = 'ready' RETURNING 1) SELECT count(*) FROM marked"
)
_PROGRESS = text(
    "UPDATE ai_settings SET embedding_generation = embedding_generation + 1, "
    "reembed_total = :total, reembed_done = 0 WHERE id = 1 RETURNING embedding_generation"
)


async def retype(session: AsyncSession, dimension: int) -> tuple[int, int]:
    """Empty the tenant's vectors, type the column for `dimension`, mark every live item to be
    embedded again; (the backfill's generation, how many items it has to embed)."""
    if not 1 <= dimension <= 16_000:
        raise ValueError("dimension out of range")
    await session.execute(_EMPTY)
    await session.execute(
        text(f"ALTER TABLE media_embeddings ALTER COLUMN embedding TYPE vector({int(dimension)})")
    )
    total = (await session.execute(_PENDING)).scalar_one()
    generation = (await session.execute(_PROGRESS, {"total": total})).scalar_one()
    return int(generation), int(total)
