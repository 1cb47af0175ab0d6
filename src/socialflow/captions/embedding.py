"""Embedding media items' text with the tenant's embedding model into its vector column.

An item's text is its title, caption, description, alt text, tags and hashtags. The same three
steps as captioning (a transaction, the call outside any, a transaction), and the vector is
written only if the tenant's model is still the one it was made with: a model change re-types
the column (ai.vectors) and its backfill (`reembed`, below) embeds every item again, in batches,
resumable: whatever it has not embedded is still `pending`.
"""

from __future__ import annotations

import array
import base64
import binascii
import hashlib
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from socialflow.ai import ledger
from socialflow.ai.calls import aembedding
from socialflow.ai.credentials import ProviderCredentials
from socialflow.ai.pricing import ModelFacts, text_tokens_bound
from socialflow.ai.providers import Provider
from socialflow.ai.services import SYSTEM_AI
from socialflow.audit.record import record_change
from socialflow.captions import calling
from socialflow.captions.calling import NoCall, Retry
from socialflow.captions.events import MediaEmbedded
from socialflow.media.models import MediaEmbedding, MediaItem
from socialflow.outbox.events import Event
from socialflow.plans.quota import TenantKey
from socialflow.resources import Resources
from socialflow.workers.actors import EventSteps

OPERATION = "embed"
BATCH = 32  # items a backfill call embeds
# Providers whose API answers vectors as base64 float32 when asked: a few KiB of text instead
# of thousands of JSON numbers the SDK would otherwise validate one by one (~3 ms a call).
_BASE64_PROVIDERS = frozenset({Provider.OPENAI, Provider.AZURE})
BACKFILL_SLICE_S = 60.0  # then the backfill hands its thread back and resumes as a new message

_SETTINGS_SQL = (
    "SELECT embedding_model, embedding_dimension, embedding_generation FROM ai_settings "
    "WHERE id = 1"
)
_SETTINGS = text(_SETTINGS_SQL)
# Held while vectors are written: a model change (which updates this row) waits for them, and
# they see whether it happened during the call.
_SETTINGS_SHARED = text(_SETTINGS_SQL + " FOR SHARE")
_PENDING_BATCH = text(
    "SELECT id FROM media_items WHERE embedding_state = 'pending' AND status = 'ready' "
    "AND deleted_at IS NULL ORDER BY id LIMIT :limit"
)
_PROGRESS = text(
    "UPDATE ai_settings SET reembed_done = least(reembed_total, reembed_done + :n) "
    "WHERE id = 1 AND embedding_generation = :generation"
)
_EXISTING = text("SELECT model, content_sha256 FROM media_embeddings WHERE media_id = :id")


def item_text(item: MediaItem) -> str:
    """What is embedded of an item (and what search finds it by)."""
    parts = [
        item.title,
        item.caption,
        item.description,
        item.alt_text or item.caption_alt_text,
        " ".join(item.tags or []),
        " ".join(item.hashtags or []),
    ]
    return "\n".join(p.strip() for p in parts if p and p.strip())


def _digest(model: str, dimension: int, content: str) -> str:
    return hashlib.sha256(f"{model}\0{dimension}\0{content}".encode()).hexdigest()


@dataclass(frozen=True)
class Settings:
    model: str
    dimension: int
    generation: int


@dataclass(frozen=True)
class Batch:
    """A call ready to be made: the items and their texts."""

    tenant: TenantKey
    settings: Settings
    items: list[tuple[uuid.UUID, str]]
    credentials: ProviderCredentials
    facts: ModelFacts
    spend: calling.Spend


@dataclass(frozen=True)
class Vectors:
    vectors: list[list[float]] | None = None
    failure: calling.Failure | None = None
    prompt_tokens: int = 0
    usage_reported: bool = False
    latency_ms: float = 0.0


async def _settings(session: AsyncSession, *, shared: bool = False) -> Settings:
    row = (await session.execute(_SETTINGS_SHARED if shared else _SETTINGS)).one()
    return Settings(row.embedding_model, row.embedding_dimension, row.embedding_generation)


async def embed_item(  # noqa: PLR0911 - one return per reason not to call
    steps: EventSteps, event: Event, resources: Resources
) -> Retry | None:
    """The embed actor's work for one item's event."""
    media_id = uuid.UUID(str(event.payload["media_id"]))
    async with steps.transaction() as session:
        if await steps.already_processed(session):
            return None
        tenant = calling.tenant_of(steps)
        item = await session.get(MediaItem, media_id)
        if item is None or item.deleted_at is not None or item.status != "ready":
            await steps.complete(session)
            return None
        settings = await _settings(session)
        content = item_text(item)
        if not content:
            await _mark(session, steps, tenant, [item.id], NoCall("no_text", "Nothing to embed."))
            return None
        existing = (await session.execute(_EXISTING, {"id": item.id})).first()
        digest = _digest(settings.model, settings.dimension, content)
        if existing is not None and existing.content_sha256 == digest:
            await steps.complete(session)  # the same text has its vector already
            return None
        item.embedding_state = item.embedding_state or "pending"
        batch = await _batch(session, event, resources, tenant, settings, [(item.id, content)])
        if isinstance(batch, NoCall):
            await _mark(session, steps, tenant, [item.id], batch)
            return None
        if isinstance(batch, Retry):
            return batch
    reservation = await _reserve(steps, event, resources, batch, backfill=False)
    if not isinstance(reservation, ledger.Reservation):
        return reservation
    answer = await _settled_call(steps, batch, reservation, resources)
    async with steps.transaction() as session:
        return await _store(session, steps, event, resources, batch=batch, answer=answer)


async def reembed(  # noqa: PLR0911 - one return per way a slice ends
    steps: EventSteps, event: Event, resources: Resources
) -> Retry | None:
    """The backfill after a model change: batches of pending items until none is left (or the
    model changed again), handing the thread back every BACKFILL_SLICE_S."""
    generation = int(event.payload["generation"])
    started = time.monotonic()
    while time.monotonic() - started < BACKFILL_SLICE_S:
        steps.anew()  # each batch queues as new work: new captions are not held behind it
        async with steps.transaction() as session:
            if await steps.already_processed(session):
                return None
            settings = await _settings(session)
            ids = list(await session.scalars(_PENDING_BATCH, {"limit": BATCH}))
            if settings.generation != generation or not ids:
                await steps.complete(session)  # done, or a newer backfill took over
                return None
            tenant = calling.tenant_of(steps)
            items = [await session.get(MediaItem, i) for i in ids]
            texts = [(i.id, item_text(i)) for i in items if i is not None]
            empty = [i for i, t in texts if not t]
            if empty:
                await _mark(session, None, tenant, empty, NoCall("no_text", "Nothing to embed."))
                await session.execute(_PROGRESS, {"n": len(empty), "generation": generation})
            texts = [(i, t) for i, t in texts if t]
            if not texts:
                continue
            batch = await _batch(session, event, resources, tenant, settings, texts)
            if isinstance(batch, Retry):
                return batch
            if isinstance(batch, NoCall):  # no key: what is left waits for a change
                await _mark(session, steps, tenant, [i for i, _ in texts], batch, all_pending=True)
                return None
        reservation = await _reserve(steps, event, resources, batch, backfill=True)
        if not isinstance(reservation, ledger.Reservation):
            return reservation
        answer = await _settled_call(steps, batch, reservation, resources)
        async with steps.transaction() as session:
            retry = await _store(
                session, steps, event, resources, batch=batch, answer=answer, backfill=True
            )
            if retry is not None:
                return retry
    return Retry(0)  # the slice is used up: continue as a new delivery


async def _batch(  # noqa: PLR0917 - the call's context, each distinct
    session: AsyncSession,
    event: Event,
    resources: Resources,
    tenant: TenantKey,
    settings: Settings,
    items: list[tuple[uuid.UUID, str]],
) -> Batch | NoCall | Retry:
    credentials = await calling.credentials(session, resources, tenant, settings.model)
    if isinstance(credentials, NoCall):
        return credentials
    facts = calling.facts_for(credentials, settings.model, "embedding")
    if isinstance(facts, NoCall):
        return facts
    wait = await calling.rate_wait(resources, tenant, OPERATION)
    if wait is not None:
        return wait
    bound = facts.cost(sum(text_tokens_bound(t) for _, t in items), 0)
    media_id = items[0][0] if len(items) == 1 else None
    spend = await calling.spend(
        session, resources, tenant, event, OPERATION, credentials, facts.name, bound, media_id
    )
    return Batch(tenant, settings, items, credentials, facts, spend)


async def _reserve(
    steps: EventSteps, event: Event, resources: Resources, batch: Batch, *, backfill: bool
) -> ledger.Reservation | Retry | None:
    """The batch's reservation, or when to try again (calling.reserve); None when the budget
    refused it (its items then say so: a backfill's every pending item, as it cannot go on
    until the budget allows)."""
    async with steps.stage():
        reservation = await calling.reserve(resources, batch.tenant, event, batch.spend)
    if not isinstance(reservation, NoCall):
        return reservation
    async with steps.transaction() as session:
        ids = [i for i, _ in batch.items]
        await _mark(session, steps, batch.tenant, ids, reservation, all_pending=backfill)
    return None


async def _settled_call(
    steps: EventSteps, batch: Batch, reservation: ledger.Reservation, resources: Resources
) -> Vectors:
    """The call, and its reservation settled to what it cost (before the vectors are stored:
    a failure storing them leaves the spend counted right)."""
    answer = await _call(batch, resources)
    async with steps.stage():
        settlement = settlement_of(reservation, batch.facts, answer)
        await ledger.settle(resources.engine, batch.tenant, reservation, settlement)
    return answer


async def _call(batch: Batch, resources: Resources) -> Vectors:
    return await request_vectors(
        batch.credentials,
        batch.facts,
        batch.settings.model,
        batch.settings.dimension,
        [t for _, t in batch.items],
        resources,
        timeout_s=resources.settings.ai_call_timeout_s,
    )


async def request_vectors(  # noqa: PLR0917 - the call's context, each distinct
    credentials: ProviderCredentials,
    facts: ModelFacts,
    model: str,
    dimension: int,
    texts: list[str],
    resources: Resources,
    *,
    timeout_s: float,
) -> Vectors:
    """One embeddings call for `texts` (a failure is returned, classified, never raised)."""
    params: dict[str, Any] = {}
    if facts.vector_size and facts.vector_size != dimension:
        params["dimensions"] = dimension  # models that can shorten their vectors
    if credentials.provider in _BASE64_PROVIDERS:
        params["encoding_format"] = "base64"
    started = time.perf_counter()
    try:
        response = await aembedding(
            credentials, resources.settings, model=model, input=texts, timeout_s=timeout_s, **params
        )
    except Exception as exc:
        return Vectors(
            failure=calling.failure_of(exc, credentials),
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
    usage = getattr(response, "usage", None)
    tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    try:
        data = sorted(response.data, key=lambda d: _field(d, "index"))
        vectors = [_floats(_field(d, "embedding")) for d in data]
    except (AttributeError, KeyError, TypeError, ValueError, binascii.Error):
        vectors = []  # not the vectors asked for: stored as a wrong answer (the item fails)
    return Vectors(
        vectors=vectors,
        prompt_tokens=tokens,
        usage_reported=tokens > 0,
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def _floats(embedding: Any) -> list[float]:
    """A vector as the provider sent it: JSON numbers, or base64 of little-endian float32."""
    if not isinstance(embedding, str):
        return [float(x) for x in embedding]
    raw = base64.b64decode(embedding, validate=True)
    if len(raw) % 4:
        raise ValueError("not a whole number of float32")
    floats = array.array("f")
    floats.frombytes(raw)
    if sys.byteorder == "big":
        floats.byteswap()
    return floats.tolist()


def _field(entry: Any, name: str) -> Any:
    return entry[name] if isinstance(entry, dict) else getattr(entry, name)


async def _store(  # noqa: PLR0912 - one branch per kind of answer
    session: AsyncSession,
    steps: EventSteps,
    event: Event,
    resources: Resources,
    *,
    batch: Batch,
    answer: Vectors,
    backfill: bool = False,
) -> Retry | None:
    ids = [i for i, _ in batch.items]
    failure = answer.failure
    if failure is not None:
        if failure.key_refused:
            why = await calling.key_refused(session, batch.tenant, batch.credentials, failure)
        elif failure.transient:
            tried = await ledger.attempts(session, event_id=event.event_id, operation=OPERATION)
            if tried.get("transient", 0) < resources.settings.ai_max_attempts:
                return Retry(calling.retry_delay_ms(failure, tried.get("transient", 0)))
            why = NoCall("failed", failure.message)
        else:
            why = NoCall("failed", failure.message)
        await _mark(session, steps, batch.tenant, ids, why, all_pending=backfill)
        return None
    settings = await _settings(session, shared=True)
    if settings.generation != batch.settings.generation:
        if not backfill:
            await steps.complete(session)  # the model changed meanwhile: the backfill has it
        return None
    vectors = answer.vectors or []
    if len(vectors) != len(ids) or any(len(v) != settings.dimension for v in vectors):
        wrong = NoCall(
            "failed",
            f"The model answered vectors of another length than {settings.dimension}.",
        )
        await _mark(session, None if backfill else steps, batch.tenant, ids, wrong)
        if backfill:
            await session.execute(_PROGRESS, {"n": len(ids), "generation": settings.generation})
        return None
    if not backfill and not await steps.complete(session):
        return None
    now = datetime.now(UTC)
    for (media_id, content), vector in zip(batch.items, vectors, strict=True):
        row = {
            "media_id": media_id,
            "model": settings.model,
            "content_sha256": _digest(settings.model, settings.dimension, content),
            "embedding": vector,
            "embedded_at": now,
        }
        stored = insert(MediaEmbedding).values(**row)
        await session.execute(
            stored.on_conflict_do_update(
                index_elements=[MediaEmbedding.media_id],
                set_={k: stored.excluded[k] for k in row if k != "media_id"},
            )
        )
        item = await session.get(MediaItem, media_id)
        if item is not None:
            item.embedding_state, item.embedding_reason = "embedded", None
    if backfill:
        await session.execute(_PROGRESS, {"n": len(ids), "generation": settings.generation})
    else:
        embedded = MediaEmbedded(
            media_id=ids[0], state="embedded", model=settings.model, generation=settings.generation
        )
        await record_change(session, SYSTEM_AI, embedded, tenant=batch.tenant.slug)
    return None


def settlement_of(
    reservation: ledger.Reservation, facts: ModelFacts, answer: Vectors
) -> ledger.Settlement:
    """The ledger's record of an embeddings call: its cost from the reported usage (what was
    reserved when the provider reported none), or the failure (nothing spent)."""
    if answer.failure is not None:
        return answer.failure.settlement(answer.latency_ms)
    if answer.usage_reported:
        cost, error_type = facts.cost(answer.prompt_tokens, 0), None
    else:
        cost, error_type = reservation.amount, "usage_missing"
    return ledger.Settlement(
        "ok",
        cost=cost,
        prompt_tokens=answer.prompt_tokens,
        latency_ms=answer.latency_ms,
        error_type=error_type,
    )


async def _mark(
    session: AsyncSession,
    steps: EventSteps | None,
    tenant: TenantKey,
    ids: list[uuid.UUID],
    why: NoCall,
    *,
    all_pending: bool = False,
) -> None:
    """Items get the state saying why they have no vector; with `steps`, the event is done.
    `all_pending`: every pending item of the tenant (a backfill that cannot go on)."""
    if steps is not None and not await steps.complete(session):
        return
    if all_pending:
        await session.execute(
            text(
                "UPDATE media_items SET embedding_state = :state, embedding_reason = :reason "
                "WHERE embedding_state = 'pending'"
            ),
            {"state": why.state, "reason": why.reason},
        )
        return
    for media_id in ids:
        item = await session.get(MediaItem, media_id)
        if item is not None:
            item.embedding_state, item.embedding_reason = why.state, why.reason
    if steps is not None and len(ids) == 1:
        embedded = MediaEmbedded(media_id=ids[0], state=why.state, reason=why.reason)
        await record_change(session, SYSTEM_AI, embedded, tenant=tenant.slug)
