"""Search's actor: the full-text configuration follows the tenant's language (search.language),
on the `media` queue (it rewrites the media table)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.outbox.events import Event
from socialflow.search.language import follow_language
from socialflow.workers.actors import event_actor


@event_actor(queue_name="media", actor_name="follow_search_language")
async def follow_search_language(session: AsyncSession, event: Event) -> None:
    """`settings.updated`, `ai_settings.updated` → `search_doc` in the language's
    configuration (nothing when it is already)."""
    await follow_language(session)
