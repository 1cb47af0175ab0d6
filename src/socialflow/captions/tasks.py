"""Actors of captioning and embedding, on the `ai` queue (their own worker process, many threads:
each mostly waits on a provider).

Each is stepwise (workers.actors.EventSteps): no transaction is held during the provider's
call. When the work must come back later (the tenant's rate limit, the provider's 429 / 5xx /
timeout, one malformed answer, a backfill's next slice) the actor raises Dramatiq's `Retry`
with the delay it computed; those retries are bounded by the ledger's attempt counts, not by
Dramatiq's, which bound only unexpected errors (a database outage, a bug).
"""

from __future__ import annotations

import dramatiq
import dramatiq.errors

from socialflow.captions.calling import AI_QUEUE, Retry
from socialflow.captions.captioning import caption_item
from socialflow.captions.embedding import embed_item, reembed
from socialflow.outbox.events import Event
from socialflow.settings import get_settings
from socialflow.workers.actors import EventSteps, event_actor, worker_resources


def _retry_when(retries: int, exception: BaseException) -> bool:
    """A deliberate Retry always comes back (its count is the ledger's); anything else up to
    WORKER_MAX_RETRIES times, then the dead-letter queue."""
    if isinstance(exception, dramatiq.errors.Retry):
        return True
    return retries < get_settings().worker_max_retries


def _again(retry: Retry | None) -> None:
    if retry is not None:
        raise dramatiq.errors.Retry("later", delay=max(retry.delay_ms, 0))


@event_actor(queue_name=AI_QUEUE, actor_name="caption_media", stepwise=True, retry_when=_retry_when)
async def caption_media(steps: EventSteps, event: Event) -> None:
    """`media.processed`, `media.caption_requested` → the item's caption (or the state saying
    why it has none) with `media.captioned`."""
    _again(await caption_item(steps, event, worker_resources()))


@event_actor(queue_name=AI_QUEUE, actor_name="embed_media", stepwise=True, retry_when=_retry_when)
async def embed_media(steps: EventSteps, event: Event) -> None:
    """`media.captioned`, `media.caption_edited`, `media.updated` → the item's text embedded
    into the tenant's vector column (skipped when the text has not changed)."""
    _again(await embed_item(steps, event, worker_resources()))


@event_actor(queue_name=AI_QUEUE, actor_name="reembed_media", stepwise=True, retry_when=_retry_when)
async def reembed_media(steps: EventSteps, event: Event) -> None:
    """`ai.embedding_model_changed` → every item of the tenant embedded again with the new
    model, in batches, resumable; progress in `GET …/ai/settings`."""
    _again(await reembed(steps, event, worker_resources()))
