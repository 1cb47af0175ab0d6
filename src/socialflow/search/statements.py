"""The search statements, composed from fixed fragments: only the filters a query names (their
values always bound), one retriever or both. Each variant is a constant string, so each is
prepared once per connection.

- text: `websearch_to_tsquery` in the configuration of the tenant's `search_doc` column (read
  from the column's own expression, so query and documents are always parsed alike), ranked by
  `ts_rank_cd`, through its GIN index;
- semantic, `hnsw`: the index's nearest `:fetch` vectors by cosine distance, then the filters
  (pgvector 0.6 has no iterative scan: the caller checks the list is whole, and otherwise asks
  again `exact`);
- semantic, `exact`: every vector the filters leave, by distance (`+ 0` keeps the planner off
  the index, which would stop at `hnsw.ef_search` rows and lose filtered ones);
- hybrid: both lists fused by reciprocal rank, score = Σ weight / (k + rank), in the same
  statement.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from sqlalchemy import TextClause, text

from socialflow.media import text_search

FILTERS = {
    "kind": "m.kind = :kind",
    "status": "m.status = :status",
    "tags": "m.tags @> CAST(:tags AS varchar(50)[])",
    "created_from": "m.created_at >= :created_from",
    "created_to": "m.created_at < :created_to",
    "exclude": "m.id <> :exclude",  # "more like this": not the item itself
}
_VECTOR = "CAST(:vector AS vector)"


def _where(filters: Iterable[str]) -> str:
    return " AND ".join(["m.deleted_at IS NULL", *(FILTERS[name] for name in sorted(filters))])


# The text-search configuration the column was generated with (media.text_search).
_CONFIG = f"""
config AS MATERIALIZED (
    SELECT CAST(generated.name AS regconfig) AS name
    FROM ({text_search.CURRENT_CONFIG_SQL}) generated
),
tsq AS MATERIALIZED (
    -- A query of exclusions only ("-word") would match nearly every item, ranked one by one:
    -- it finds nothing (querytree 'T': nothing an index can look up).
    SELECT parsed.query FROM (
        SELECT websearch_to_tsquery(config.name, :q) AS query FROM config
    ) parsed WHERE querytree(parsed.query) <> 'T'
),
"""
_TEXT = """
text_hits AS (
    SELECT id, score, row_number() OVER (ORDER BY score DESC, id) AS rank FROM (
        SELECT m.id, ts_rank_cd(m.search_doc, tsq.query) AS score
        FROM media_items m, tsq
        WHERE m.search_doc @@ tsq.query AND {where}
        ORDER BY 2 DESC, 1 LIMIT :depth
    ) ranked
)"""
_HNSW = f"""
vector_hits AS (
    SELECT id, 1 - distance AS score, row_number() OVER (ORDER BY distance, id) AS rank FROM (
        SELECT m.id, nearest.distance
        FROM (
            SELECT e.media_id, e.embedding <=> {_VECTOR} AS distance
            FROM media_embeddings e ORDER BY e.embedding <=> {_VECTOR} LIMIT :fetch
        ) nearest
        JOIN media_items m ON m.id = nearest.media_id
        WHERE {{where}}
        ORDER BY 2, 1 LIMIT :depth
    ) ranked
)"""
_EXACT = f"""
vector_hits AS (
    SELECT id, 1 - distance AS score, row_number() OVER (ORDER BY distance, id) AS rank FROM (
        SELECT m.id, (e.embedding <=> {_VECTOR}) + 0 AS distance
        FROM media_embeddings e JOIN media_items m ON m.id = e.media_id
        WHERE {{where}}
        ORDER BY 2, 1 LIMIT :depth
    ) ranked
)"""
_SHOWN = (
    "m.title, m.caption, m.status, "
    "m.derivatives -> 'thumb_webp' ->> 'key' AS thumb_key"  # the 400 px square (media.processing)
)


@lru_cache(maxsize=256)
def search(mode: str, vector_path: str | None, filters: frozenset[str]) -> TextClause:
    """The statement for `mode` (text, semantic, hybrid), the vector list's path (hnsw,
    exact; None for text) and the filters named."""
    where = _where(filters)
    lists = []
    if mode in {"text", "hybrid"}:
        lists.append(_CONFIG + _TEXT.format(where=where))
    if mode in {"semantic", "hybrid"}:
        lists.append((_HNSW if vector_path == "hnsw" else _EXACT).format(where=where))
    # How long the vector list is: the caller checks an HNSW list is whole.
    counted = "0" if mode == "text" else "(SELECT count(*) FROM vector_hits)"
    shown = f"{_SHOWN}, {counted} AS vector_count"
    if mode == "hybrid":
        fused = """
fused AS (
    SELECT coalesce(t.id, v.id) AS id,
           coalesce(:text_weight / (:k + t.rank), 0)
               + coalesce(:semantic_weight / (:k + v.rank), 0) AS score,
           t.rank IS NOT NULL AS by_text, v.rank IS NOT NULL AS by_semantic
    FROM text_hits t FULL OUTER JOIN vector_hits v ON v.id = t.id
)"""
        lists.append(fused)
        source = "fused"
    elif mode == "text":
        source = "(SELECT id, score, true AS by_text, false AS by_semantic FROM text_hits)"
    else:
        source = "(SELECT id, score, false AS by_text, true AS by_semantic FROM vector_hits)"
    statement = (
        "WITH "
        + ",".join(lists).lstrip()
        + f"\nSELECT f.id, f.score, f.by_text, f.by_semantic, {shown}\n"
        + f"FROM {source} f JOIN media_items m ON m.id = f.id\n"
        + "ORDER BY f.score DESC, f.id LIMIT :page OFFSET :offset"
    )
    return text(statement)


def _counted(filters: frozenset[str]) -> str:
    return (
        "SELECT count(*) FROM (SELECT 1 FROM media_embeddings e "
        f"JOIN media_items m ON m.id = e.media_id WHERE {_where(filters)} LIMIT :cap) c"
    )


@lru_cache(maxsize=64)
def candidates(filters: frozenset[str]) -> TextClause:
    """How many vectors the filters leave, counted up to `:cap`."""
    return text(_counted(filters))


@lru_cache(maxsize=64)
def plan(filters: frozenset[str]) -> TextClause:
    """The tenant's embedding model, how many vectors a query may rank (capped: an exact
    count when filtered, the planner's estimate when not, counted while it has none), whether
    the HNSW index exists; and `hnsw.ef_search` for this transaction."""
    if filters:
        counted = f"({_counted(filters)})"
    else:
        counted = (
            "(SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint "
            f"ELSE ({_counted(frozenset())}) END "
            "FROM pg_class WHERE oid = to_regclass('media_embeddings'))"
        )
    return text(
        "SELECT a.embedding_model, a.embedding_dimension, "
        "set_config('hnsw.ef_search', CAST(:ef AS text), true) AS ef, "
        f"{counted} AS candidates, "
        "to_regclass('ix_media_embeddings_hnsw') IS NOT NULL AS indexed "
        "FROM ai_settings a WHERE a.id = 1"
    )


SET_EF = text("SELECT set_config('hnsw.ef_search', CAST(:ef AS text), true)")
SIMILAR_SOURCE = text(
    "SELECT e.embedding::text AS vector FROM media_embeddings e JOIN media_items m "
    "ON m.id = e.media_id WHERE e.media_id = :id AND m.deleted_at IS NULL"
)
ITEM_EXISTS = text("SELECT 1 FROM media_items WHERE id = :id AND deleted_at IS NULL")
