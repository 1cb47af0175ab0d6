"""The tenant's full-text configuration follows its language: when the caption language or,
without one, the locale changes to a language with another PostgreSQL dictionary, the
generated `search_doc` column is generated again with it (and its GIN index rebuilt).

Re-generating rewrites `media_items` under an exclusive lock (seconds for 100,000 items): it
runs in a worker, once per change that needs it, never in the request that changed settings.
"""

from __future__ import annotations

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.media import text_search

log = structlog.get_logger(__name__)

_LANGUAGE = text(
    "SELECT coalesce(a.caption_language, s.locale) AS language "
    "FROM settings s LEFT JOIN ai_settings a ON a.id = 1 WHERE s.id = 1"
)
_CURRENT = text(text_search.CURRENT_CONFIG_SQL)
_TURN = text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.search_language'))")
_LOCK_TIMEOUT = text("SET LOCAL lock_timeout = '10s'")
_DROP = text("ALTER TABLE media_items DROP COLUMN search_doc")  # and its index
_INDEX = text("CREATE INDEX ix_media_items_search_doc ON media_items USING gin (search_doc)")


async def follow_language(session: AsyncSession) -> str | None:
    """Re-generate the tenant's `search_doc` for its language if its configuration differs;
    the new configuration, or None when nothing changed.

    Runs of one tenant take turns (a transaction lock on its schema's name), and each reads
    the language after its turn came: the last to run applies the latest language. The table
    lock the rewrite needs is waited for at most LOCK_TIMEOUT (then the actor retries)."""
    await session.execute(_TURN)
    language = (await session.execute(_LANGUAGE)).scalar_one_or_none()
    wanted = text_search.config_for(language)
    current = (await session.execute(_CURRENT)).scalar_one_or_none()
    if current == wanted:
        return None
    expression = text_search.generated_expression(wanted)
    await session.execute(_LOCK_TIMEOUT)
    await session.execute(_DROP)
    await session.execute(
        text(
            "ALTER TABLE media_items ADD COLUMN search_doc tsvector "
            f"GENERATED ALWAYS AS ({expression}) STORED"
        )
    )
    await session.execute(_INDEX)
    log.info("search.language_followed", config=wanted, previous=current)
    return wanted
