"""Search use cases: a query (text, semantic or hybrid, with filters, a page at a time) and
"more like this". Read-only: they record nothing but the AI ledger's row of a query's embedding
(ai.ledger, in statements of its own) and, if the provider refuses the tenant's key, the key's
`invalid` status (as every AI call does)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.access.tenant_access import TenantAccess
from socialflow.captions import calling
from socialflow.lib.pagination import decode_cursor, encode_cursor
from socialflow.lib.problems import Problem, invalid
from socialflow.media.storage import Storage
from socialflow.plans.quota import TenantKey
from socialflow.resources import Resources
from socialflow.search import query_vectors, statements
from socialflow.search.bodies import SearchHit, SearchResults
from socialflow.settings import Settings

log = structlog.get_logger(__name__)

MODES = ("hybrid", "semantic", "text")
KINDS = ("image", "video")
STATUSES = ("pending_upload", "processing", "ready", "failed")
QUERY_PARAMETERS = frozenset(
    {"q", "mode", "kind", "tags", "created_from", "created_to", "status", "limit", "cursor"}
)
SIMILAR_PARAMETERS = frozenset({"kind", "tags", "created_from", "created_to", "status", "limit"})
MAX_QUERY_LENGTH = 500
MAX_TAGS = 10
MAX_TAG_LENGTH = 50
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_DEPTH = 1000  # how far pages reach into a result list
HNSW_MAX_FETCH = 1000  # pgvector's largest hnsw.ef_search


@dataclass(frozen=True)
class SearchQuery:
    """A checked query: its text, mode, the filters given, and the page asked for."""

    q: str
    mode: str
    filters: dict[str, Any] = field(default_factory=dict)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    answered: str | None = None  # a later page: the mode the first was answered in

    @property
    def fingerprint(self) -> str:
        """What a cursor is bound to: this query, mode and filters (never another's)."""
        shown = {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.filters.items()
        }
        canonical = json.dumps([" ".join(self.q.split()), self.mode, shown], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    def cursor_after(self, shown: int, answered: str) -> str:
        """The next page's cursor: this query, where it goes on, and the mode it is answered
        in (a list answered by text stays so, whatever the provider does meanwhile)."""
        return encode_cursor((self.fingerprint, str(self.offset + shown), answered))


def unknown_parameters(given: set[str], allowed: frozenset[str]) -> None:
    """A parameter this endpoint does not know is refused, not ignored (a misspelt filter
    would otherwise widen the results silently)."""
    unknown = sorted(given - allowed)
    if unknown:
        raise Problem(
            422,
            "validation-error",
            f"Unknown query parameter(s): {', '.join(unknown)}.",
            errors=[
                {"field": name, "source": "query", "message": "unknown parameter"}
                for name in unknown
            ],
        )


def filters_of(
    *,
    kind: str | None,
    tags: str | None,
    status: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if kind is not None:
        if kind not in KINDS:
            raise invalid("kind", f"one of {', '.join(KINDS)}")
        filters["kind"] = kind
    if status is not None:
        if status not in STATUSES:
            raise invalid("status", f"one of {', '.join(STATUSES)}")
        filters["status"] = status
    if tags is not None:
        wanted = sorted({t.strip() for t in tags.split(",") if t.strip()})
        if not wanted or len(wanted) > MAX_TAGS or any(len(t) > MAX_TAG_LENGTH for t in wanted):
            raise invalid(
                "tags", f"1 to {MAX_TAGS} comma-separated tags of {MAX_TAG_LENGTH} characters"
            )
        filters["tags"] = wanted
    for name, moment in (("created_from", created_from), ("created_to", created_to)):
        if moment is not None:
            if moment.tzinfo is None:
                raise invalid(name, "a time with its zone (e.g. 2026-01-31T00:00:00Z)")
            filters[name] = moment
    if created_from and created_to and created_from >= created_to:
        raise invalid("created_to", "after created_from")
    return filters


def search_query(
    q: str | None, mode: str | None, limit: int | None, cursor: str | None, filters: dict[str, Any]
) -> SearchQuery:
    text = (q or "").strip()
    if not text:
        raise invalid("q", "a query of 1 to 500 characters")
    if len(text) > MAX_QUERY_LENGTH:
        raise invalid("q", f"at most {MAX_QUERY_LENGTH} characters")
    mode = mode or "hybrid"
    if mode not in MODES:
        raise invalid("mode", f"one of {', '.join(MODES)}")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"1 to {MAX_LIMIT}")
    query = SearchQuery(text, mode, filters, limit)
    if cursor:
        offset, answered = _position(cursor, query.fingerprint)
        query = SearchQuery(text, mode, filters, limit, offset, answered)
    if query.offset + limit > MAX_DEPTH:
        raise invalid("cursor", f"results reach {MAX_DEPTH} deep: refine the query")
    return query


_CURSOR_OFFSET = re.compile(r"[0-9]{1,4}")


def _position(cursor: str, fingerprint: str) -> tuple[int, str]:
    """A cursor's offset and the mode its first page was answered in."""
    parts = decode_cursor(cursor)
    if (
        len(parts) != 3
        or parts[0] != fingerprint
        or not _CURSOR_OFFSET.fullmatch(parts[1])
        or parts[2] not in MODES
    ):
        raise Problem(
            422,
            "invalid-cursor",
            "The cursor belongs to another query: send it with the query it came with.",
            errors=[{"field": "cursor", "source": "query", "message": "not this query's"}],
        )
    return int(parts[1]), parts[2]


@dataclass(frozen=True)
class _Semantic:
    state: str  # ok, not_used, unavailable
    reason: str | None = None
    vector: list[float] | None = None
    path: str | None = None  # hnsw, exact
    candidates: int = 0


async def search(
    session: AsyncSession,
    resources: Resources,
    access: TenantAccess,
    query: SearchQuery,
    storage: Storage,
    *,
    release: Callable[[], Awaitable[None]],
) -> SearchResults:
    """One page of the tenant's items for `query`. Semantic and hybrid queries that cannot
    have a vector answer by text, saying why in `semantic`.

    A query whose vector is not cached is embedded with no connection held: `release` ends
    the request's transaction first, and the page is read in a new one."""
    settings = resources.settings
    mode = query.answered or query.mode
    # Hybrid fuses lists of a fixed length, so every page is cut from the same fused list.
    depth = query.offset + query.limit + 1
    list_depth = settings.search_rrf_candidates if mode == "hybrid" else depth
    if mode == "text":
        semantic = _Semantic("not_used")
        if query.mode != "text":
            semantic = _Semantic("unavailable", "This list's first page was answered by text.")
        return await _answer(session, query, "text", semantic, storage, settings, list_depth)
    planned = await _plan_row(session, settings, query, list_depth)
    if not planned.embedding_model:
        semantic = _Semantic("unavailable", "The tenant has no embedding model.")
        return await _answer(session, query, "text", semantic, storage, settings, list_depth)
    model = query_vectors.Model(str(planned.embedding_model), int(planned.embedding_dimension))
    tenant = TenantKey(access.tenant.id, access.tenant.slug, access.tenant.schema_name)
    prepared = await query_vectors.prepare(session, resources, tenant, model, query.q)
    if not isinstance(prepared, query_vectors.Call):
        semantic = _semantic(prepared, planned, settings)
        answered = mode if semantic.vector is not None else "text"
        return await _answer(session, query, answered, semantic, storage, settings, list_depth)
    await release()
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    embedded = await query_vectors.embed(resources, prepared, request_id=request_id)
    async with resources.in_tenant(access.tenant.slug) as (_, fresh):
        if isinstance(embedded, query_vectors.Refused):
            why = await calling.key_refused(fresh, tenant, embedded.credentials, embedded.failure)
            embedded = query_vectors.Unavailable(why.reason)
        planned = await _plan_row(fresh, settings, query, list_depth)  # ef, in this one
        semantic = _semantic(embedded, planned, settings)
        answered = mode if semantic.vector is not None else "text"
        return await _answer(fresh, query, answered, semantic, storage, settings, list_depth)


def _semantic(
    vector: list[float] | query_vectors.Unavailable, planned: Any, settings: Settings
) -> _Semantic:
    if isinstance(vector, query_vectors.Unavailable):
        return _Semantic("unavailable", vector.reason)
    return _Semantic(
        "ok", vector=vector, path=_path(planned, settings), candidates=int(planned.candidates)
    )


async def similar(
    session: AsyncSession,
    resources: Resources,
    media_id: uuid.UUID,
    filters: dict[str, Any],
    limit: int,
    *,
    storage: Storage,
) -> SearchResults:
    """The items nearest to `media_id`'s vector (not itself), with the filters given."""
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid("limit", f"1 to {MAX_LIMIT}")
    source = (await session.execute(statements.SIMILAR_SOURCE, {"id": media_id})).first()
    if source is None:
        if (await session.execute(statements.ITEM_EXISTS, {"id": media_id})).first() is None:
            raise Problem(404, "not-found", f"No media item {media_id}.")
        raise Problem(
            409,
            "no-embedding",
            "The item has no vector yet (it is embedded once it has text and the tenant an "
            "embedding model).",
        )
    vector = [float(x) for x in source.vector.strip("[]").split(",")]
    query = SearchQuery("", "semantic", {**filters, "exclude": media_id}, limit)
    planned = await _plan_row(session, resources.settings, query, query.limit + 1)
    semantic = _semantic(vector, planned, resources.settings)
    return await _answer(
        session, query, "semantic", semantic, storage, resources.settings, query.limit + 1
    )


async def _plan_row(
    session: AsyncSession, settings: Settings, query: SearchQuery, list_depth: int
) -> Any:
    fetch = _fetch(settings, query, list_depth)
    params = {"ef": fetch, "cap": settings.search_exact_scan_below, **query.filters}
    return (await session.execute(statements.plan(frozenset(query.filters)), params)).one()


def _fetch(settings: Settings, query: SearchQuery, list_depth: int) -> int:
    """How many neighbours the HNSW index is asked for (and hnsw.ef_search): filtered lists
    over-fetch as far as pgvector goes, and are checked whole after."""
    if set(query.filters) - {"exclude"}:
        return HNSW_MAX_FETCH
    return min(HNSW_MAX_FETCH, max(settings.search_hnsw_ef_search, list_depth + 10))


def _path(planned: Any, settings: Settings) -> str:
    small = int(planned.candidates) < settings.search_exact_scan_below
    return "exact" if small or not planned.indexed else "hnsw"


async def _answer(  # noqa: PLR0917 - the query and how it is answered, each distinct
    session: AsyncSession,
    query: SearchQuery,
    mode: str,
    semantic: _Semantic,
    storage: Storage,
    settings: Settings,
    list_depth: int,
) -> SearchResults:
    params: dict[str, Any] = {
        **query.filters,
        "q": query.q,
        "depth": list_depth,
        "page": query.limit + 1,
        "offset": query.offset,
    }
    if mode != "text":
        params |= {
            "vector": _vector_literal(semantic.vector or []),
            "fetch": _fetch(settings, query, list_depth),
            "k": settings.search_rrf_k,
            "text_weight": settings.search_text_weight,
            "semantic_weight": settings.search_semantic_weight,
        }
    filters = frozenset(query.filters)

    async def ranked(path: str | None) -> list[Any]:
        return list((await session.execute(statements.search(mode, path, filters), params)).all())

    path = semantic.path if mode != "text" else None
    rows = await ranked(path)
    if path == "hnsw" and _cut_short(rows, list_depth, semantic.candidates, query.offset, mode):
        # The index's neighbours did not hold every match the filters allow (pgvector 0.6 has
        # no iterative scan): as many as it gives, then, if still short, all of them ranked.
        if params["fetch"] < HNSW_MAX_FETCH:
            await session.execute(statements.SET_EF, {"ef": HNSW_MAX_FETCH})
            params["fetch"] = HNSW_MAX_FETCH
            rows = await ranked("hnsw")
        if _cut_short(rows, list_depth, semantic.candidates, query.offset, mode) and (
            await _rankable(session, settings, query)
        ):
            rows = await ranked("exact")
    shown = rows[: query.limit]
    hits = [_hit(row, storage, settings) for row in shown]
    return SearchResults(
        items=hits,
        mode=query.mode,
        semantic=semantic.state,
        semantic_reason=semantic.reason,
        next_cursor=query.cursor_after(len(shown), mode) if len(rows) > query.limit else None,
    )


def _cut_short(rows: list[Any], list_depth: int, candidates: int, offset: int, mode: str) -> bool:
    """Whether an HNSW list came back shorter than the matches that exist."""
    if not rows:  # a page past a semantic list's end, or nothing at all: the list was short
        return offset == 0 or mode == "semantic"
    return int(rows[0].vector_count) < min(list_depth, candidates)


async def _rankable(session: AsyncSession, settings: Settings, query: SearchQuery) -> bool:
    """Whether the matches are few enough to rank them all exactly (SEARCH_EXACT_FALLBACK_MAX):
    beyond, the index's list stands (a filter that leaves so many rarely loses any)."""
    cap = settings.search_exact_fallback_max
    params = {"cap": cap + 1, **query.filters}
    found = await session.execute(statements.candidates(frozenset(query.filters)), params)
    counted = int(found.scalar_one())
    if counted > cap:
        log.info("search.exact_fallback_skipped", matches_over=cap)
    return counted <= cap


def _hit(row: Any, storage: Storage, settings: Settings) -> SearchHit:
    matched = [name for name, hit in (("text", row.by_text), ("semantic", row.by_semantic)) if hit]
    thumbnail = None
    if row.thumb_key and row.status == "ready":
        thumbnail = storage.download_url(row.thumb_key, expires_s=settings.media_download_url_ttl_s)
    return SearchHit(
        media_id=str(row.id),
        title=row.title,
        caption=row.caption,
        thumbnail_url=thumbnail,
        score=round(float(row.score), 6),
        matched=matched,
    )


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"
