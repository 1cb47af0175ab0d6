"""The tenant's vector column: typed `vector(N)` for its embedding model's dimension, re-typed
(and emptied) when the model changes, so vectors of two models never sit side by side; and its
HNSW index, rebuilt for the new dimension.

The tables belong to the media library, a layer above: named in SQL, not imported (as
plans.limits counts them)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Approximate nearest neighbours by cosine distance; HNSW takes vectors of up to 2,000
# dimensions (pgvector): a tenant with a larger model is searched by an exact scan.
INDEX_NAME = "ix_media_embeddings_hnsw"
HNSW_MAX_DIMENSION = 2000
# pgvector's defaults, written out: on clustered vectors like real embeddings a larger graph
# (m 24-32) or build (ef_construction 128) bought less recall than searching wider
# (SEARCH_HNSW_EF_SEARCH 200), and cost up to 60 % more build time (bench/search.py).
HNSW_BUILD = "m = 16, ef_construction = 64"

# Vectors of the old model go; the column takes the new dimension (the table is empty).
_EMPTY = text("TRUNCATE media_embeddings")
_DROP_INDEX = text(f"DROP INDEX IF EXISTS {INDEX_NAME}")
# Every live item is to be embedded again.
_PENDING = text(
    "WITH marked AS (UPDATE media_items SET embedding_state = 'pending', embedding_reason = NULL "
    "WHERE deleted_at IS NULL AND status = 'ready' RETURNING 1) SELECT count(*) FROM marked"
)
_PROGRESS = text(
    "UPDATE ai_settings SET embedding_generation = embedding_generation + 1, "
    "reembed_total = :total, reembed_done = 0 WHERE id = 1 RETURNING embedding_generation"
)


def create_index_sql(dimension: int) -> str | None:
    """The HNSW index's statement (unqualified: the tenant's schema on the search_path), None
    for a dimension HNSW does not take."""
    if dimension > HNSW_MAX_DIMENSION:
        return None
    return (
        f"CREATE INDEX {INDEX_NAME} ON media_embeddings "
        f"USING hnsw (embedding vector_cosine_ops) WITH ({HNSW_BUILD})"
    )


async def retype(session: AsyncSession, dimension: int) -> tuple[int, int]:
    """Empty the tenant's vectors, type the column for `dimension`, mark every live item to be
    embedded again; (the backfill's generation, how many items it has to embed)."""
    if not 1 <= dimension <= 16_000:
        raise ValueError("dimension out of range")
    await session.execute(_EMPTY)
    await session.execute(_DROP_INDEX)
    await session.execute(
        text(f"ALTER TABLE media_embeddings ALTER COLUMN embedding TYPE vector({int(dimension)})")
    )
    index = create_index_sql(dimension)
    if index is not None:
        await session.execute(text(index))
    total = (await session.execute(_PENDING)).scalar_one()
    generation = (await session.execute(_PROGRESS, {"total": total})).scalar_one()
    return int(generation), int(total)
