"""What search answers."""

from __future__ import annotations

import msgspec


class SearchHit(msgspec.Struct):
    media_id: str
    title: str | None
    caption: str | None
    thumbnail_url: str | None  # short-lived, as the media library's URLs
    score: float  # text: ts_rank_cd; semantic: cosine similarity; hybrid: reciprocal rank fusion
    matched: list[str]  # the retrievers that found it: "text", "semantic"


class SearchResults(msgspec.Struct):
    items: list[SearchHit]
    mode: str
    # Whether the semantic list took part: "ok", "not_used" (text mode), or "unavailable" (no
    # embedding model or key for it, the budget, the rate limit, the provider): then by text
    # only, `semantic_reason` saying why.
    semantic: str
    semantic_reason: str | None = None
    next_cursor: str | None = None
