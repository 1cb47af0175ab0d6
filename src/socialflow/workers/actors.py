"""`event_actor`: declare an actor that applies each outbox event once, in its tenant's schema.

The actor's effects and the record that it processed the event commit in one transaction, so a
redelivered message (relay retry, worker crash, Dramatiq retry) finds the record and does
nothing. Concurrent duplicates serialise on the record's primary key.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
import structlog
from dramatiq.asyncio import get_event_loop_thread
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from socialflow.db.rows import fetch_rows
from socialflow.db.session import unit_of_work
from socialflow.db.tenant_schema import set_search_path
from socialflow.outbox.events import Event
from socialflow.resources import Resources
from socialflow.settings import Settings, get_settings
from socialflow.workers.step_gate import FIRST, LATER, step_gate

log = structlog.get_logger("socialflow.worker")

EventHandler = Callable[[AsyncSession, Event], Awaitable[None]]

# The tenant's status and, in the same round trip, its schema on this transaction's search_path
# (SET LOCAL semantics), quoted as db.tenant_schema.search_path_for quotes it.
_SCHEMA_PATH = "'\"' || replace(t.schema_name, '\"', '\"\"') || '\", extensions'"
_ENTER = (
    "SELECT t.status, t.id, t.slug, t.schema_name, "  # noqa: S608
    f"{set_search_path(_SCHEMA_PATH)}{{processed}} FROM shared.tenants t WHERE "
)
_BY_ID = "t.id = :id"
_BY_SLUG = "t.slug = :slug AND t.status <> 'purged'"
ENTER_TENANT_BY_ID = text(_ENTER.format(processed="") + _BY_ID)
ENTER_TENANT_BY_SLUG = text(_ENTER.format(processed="") + _BY_SLUG)
# A stepwise actor's transaction also learns, in the same round trip, whether the event is
# already recorded processed by the actor (EventSteps.already_processed).
_PROCESSED = (
    ", EXISTS (SELECT 1 FROM shared.processed_event p "
    "WHERE p.event_id = :event_id AND p.actor = :actor) AS processed"
)
ENTER_STEP_BY_ID = text(_ENTER.format(processed=_PROCESSED) + _BY_ID)
ENTER_STEP_BY_SLUG = text(_ENTER.format(processed=_PROCESSED) + _BY_SLUG)
LIVE_TENANT_STATUSES = frozenset({"active", "suspended"})
EVENTS_DROPPED = Counter(
    "socialflow_worker_events_dropped",
    "Events not applied because their tenant is deleted, purged or unknown",
    ["actor", "reason"],
)

# Every actor `event_actor` declared in this process, by (handler's module, actor name): the
# real ones are those of the registry's modules (workers.registry); tests declare their own.
DECLARED_EVENT_ACTORS: dict[tuple[str, str], dramatiq.Actor[[dict[str, Any]], None]] = {}

# The handler behind each event actor, by actor name (workers.testing runs them directly).
EVENT_HANDLERS: dict[str, EventHandler] = {}
# The handlers of actors declared with `stepwise=True`, by actor name.
STEPWISE_HANDLERS: dict[str, StepwiseHandler] = {}

RECORD_PROCESSED_SQL = text(
    "INSERT INTO shared.processed_event (event_id, actor) VALUES (:event_id, :actor) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)


class WorkerResources:
    """The worker process's `Resources` (what a route gets: settings, database, vault, tenant
    directory), opened on first use inside the worker's event loop."""

    _settings: Settings | None = None
    _resources: Resources | None = None

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """Use these settings instead of the environment's (tests, embedding)."""
        cls._settings = settings

    @classmethod
    def current_settings(cls) -> Settings:
        return cls._settings or get_settings()

    @classmethod
    def get(cls) -> Resources:
        if cls._resources is None:
            settings = cls._settings or get_settings()
            cls._resources = Resources.open(
                settings,
                # The AI actors' per-tenant rate limits live there.
                cache_redis=settings.effective_cache_redis_url is not None,
            )
        return cls._resources

    @classmethod
    def session_factory(cls) -> async_sessionmaker[AsyncSession]:
        return cls.get().session_factory

    @classmethod
    async def dispose(cls) -> None:
        if cls._resources is not None:
            await cls._resources.close()
        cls._resources = None


def worker_resources() -> Resources:
    """What an actor works with: the same settings, vault and directory a route gets."""
    return WorkerResources.get()


async def record_processed(session: AsyncSession, event_id: uuid.UUID, actor: str) -> bool:
    """True the first time `actor` records `event_id`; False for a redelivery."""
    result = await session.execute(RECORD_PROCESSED_SQL, {"event_id": event_id, "actor": actor})
    return result.first() is not None


class TenantGone(Exception):
    """The event's tenant is deleted, purged or unknown: the event is dropped."""

    def __init__(self, status: str | None) -> None:
        super().__init__(status or "unknown")
        self.status = status or "unknown"


@dataclass(frozen=True, slots=True)
class _Entered:
    status: str
    id: uuid.UUID
    slug: str
    schema_name: str
    processed: bool


@dataclass(frozen=True)
class EnteredTenant:
    """The tenant whose schema a step's transaction entered."""

    id: uuid.UUID
    slug: str
    schema_name: str


class EventSteps:
    """The transactions of a stepwise actor (`event_actor(..., stepwise=True)`).

    An actor that waits on slow I/O between database work (an AI provider's answer) must not
    hold a transaction, and a pooled connection, while it waits: it runs each step in a
    transaction of its own, in the event's tenant schema. The step that writes the effects
    calls `complete(session)`, which records the event as processed in that same transaction,
    so a redelivery after it commits is a no-op; what earlier steps wrote must be safe to
    find again on a redelivery (the actor resumes or undoes it).

    The process's step transactions pass a gate (workers.step_gate, WORKER_STEP_CONCURRENCY at
    once): a delivery's later steps before other deliveries' first.
    """

    def __init__(self, factory: async_sessionmaker[AsyncSession], event: Event, actor: str) -> None:
        self.factory = factory
        self.event = event
        self.actor = actor
        self.completed = False  # this delivery recorded the event (in a committed step)
        self.tenant: EnteredTenant | None = None  # known once a transaction entered it
        self._processed: bool | None = None  # as found by the open transaction's entry
        self._began = False
        self._in_stage = False

    @asynccontextmanager
    async def stage(self) -> AsyncIterator[None]:
        """Hold the gate's slot for a stretch of database work (transactions and statements of
        their own around them); transactions inside take no other slot."""
        if self._in_stage:
            yield
            return
        gate = step_gate(WorkerResources.current_settings().worker_step_concurrency)
        priority = LATER if self._began else FIRST
        self._began = True
        async with gate.slot(priority):
            self._in_stage = True
            try:
                yield
            finally:
                self._in_stage = False

    def anew(self) -> None:
        """The next stage waits as new work does (a backfill's next batch): a long backfill's
        batches then take turns with new deliveries instead of going before all of them."""
        self._began = False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work in the event's tenant schema; raises TenantGone when the tenant is
        no longer live (the actor stops; the event is dropped)."""
        async with self.stage(), unit_of_work(self.factory) as session:
            if self.event.tenant is not None or self.event.tenant_id is not None:
                row = await self._enter(session)
                status = None if row is None else str(row.status)
                if row is None or status not in LIVE_TENANT_STATUSES:
                    raise TenantGone(status)
                self.tenant = EnteredTenant(row.id, row.slug, row.schema_name)
                self._processed = bool(row.processed)
            session.commit = _commit_forbidden  # type: ignore[method-assign]
            try:
                yield session
            finally:
                del session.commit
                self._processed = None

    async def _enter(self, session: AsyncSession) -> _Entered | None:
        marks = {"event_id": self.event.event_id, "actor": self.actor}
        if self.event.tenant_id is not None:
            rows = await fetch_rows(session, ENTER_STEP_BY_ID, {"id": self.event.tenant_id} | marks)
        else:
            by_slug = {"slug": self.event.tenant} | marks
            rows = await fetch_rows(session, ENTER_STEP_BY_SLUG, by_slug)
        if not rows:
            return None
        status, tenant_id, slug, schema_name, _, processed = rows[0]
        return _Entered(status, tenant_id, slug, schema_name, processed)

    async def already_processed(self, session: AsyncSession) -> bool:
        """Whether the event is recorded processed by this actor (found as the transaction
        entered the tenant's schema, in the same round trip)."""
        if self._processed is not None:
            return self._processed
        found = await session.execute(
            PROCESSED_SQL, {"event_id": self.event.event_id, "actor": self.actor}
        )
        return found.first() is not None

    async def complete(self, session: AsyncSession) -> bool:
        """Record the event as processed with the effects of this transaction; False when a
        concurrent delivery recorded it first (the caller then writes nothing)."""
        recorded = await record_processed(session, self.event.event_id, self.actor)
        self.completed = self.completed or recorded
        return recorded


StepwiseHandler = Callable[[EventSteps, Event], Awaitable[None]]

PROCESSED_SQL = text(
    "SELECT 1 FROM shared.processed_event WHERE event_id = :event_id AND actor = :actor"
)


async def apply_event_stepwise(
    handler: StepwiseHandler,
    actor: str,
    envelope: dict[str, Any],
    factory: async_sessionmaker[AsyncSession],
) -> bool:
    """Run a stepwise handler for one event; True if this delivery completed it (False: done
    before, or its tenant is gone and the event dropped). Whatever the handler raises (a
    Retry) propagates."""
    event = Event.from_message_arg(envelope)
    steps = EventSteps(factory, event, actor)
    try:
        await handler(steps, event)
    except TenantGone as gone:
        log.warning("actor.tenant_gone", tenant_status=gone.status)
        EVENTS_DROPPED.labels(actor=actor, reason=gone.status).inc()
        return False
    return steps.completed


async def apply_named_event(
    actor: str, envelope: dict[str, Any], factory: async_sessionmaker[AsyncSession]
) -> bool:
    """Apply one event with the handler of the actor declared as `actor`, as its worker would."""
    if actor in STEPWISE_HANDLERS:
        return await apply_event_stepwise(STEPWISE_HANDLERS[actor], actor, envelope, factory)
    return await apply_event(EVENT_HANDLERS[actor], actor, envelope, factory)


async def apply_event(
    handler: EventHandler,
    actor: str,
    envelope: dict[str, Any],
    factory: async_sessionmaker[AsyncSession],
) -> bool:
    """Run `handler` for one event in its tenant's schema, once. False if not applied: already
    applied, or its tenant is deleted or purged (the event is dropped, logged and counted)."""
    event = Event.from_message_arg(envelope)
    async with unit_of_work(factory) as session:
        if event.tenant is not None or event.tenant_id is not None:
            status = await enter_event_tenant(session, event)
            if status not in LIVE_TENANT_STATUSES:
                log.warning("actor.tenant_gone", tenant_status=status or "unknown")
                EVENTS_DROPPED.labels(actor=actor, reason=status or "unknown").inc()
                return False
        if not await record_processed(session, event.event_id, actor):
            log.info("actor.duplicate_skipped")
            return False
        # The unit of work commits the effects with the processed record; a handler that
        # committed on its own would split them.
        session.commit = _commit_forbidden  # type: ignore[method-assign]
        try:
            await handler(session, event)
        finally:
            del session.commit
    return True


async def enter_event_tenant(session: AsyncSession, event: Event) -> str | None:
    """Point the session at the event's tenant schema, found by the tenant's id (a slug may
    belong to a newer tenant after a purge); return the tenant's status, None if unknown.

    Messages written before tenant ids travelled name only the slug: the live tenant with it.
    """
    if event.tenant_id is not None:
        row = (await session.execute(ENTER_TENANT_BY_ID, {"id": event.tenant_id})).first()
    else:
        row = (await session.execute(ENTER_TENANT_BY_SLUG, {"slug": event.tenant})).first()
    return None if row is None else str(row.status)


async def _commit_forbidden() -> None:
    raise RuntimeError("event handlers must not commit: the unit of work around them does")


def event_actor(
    *,
    queue_name: str,
    actor_name: str | None = None,
    broker: dramatiq.Broker | None = None,
    session_factory: Callable[[], async_sessionmaker[AsyncSession]] | None = None,
    stepwise: bool = False,
    **options: Any,
) -> Callable[[Any], dramatiq.Actor[[dict[str, Any]], None]]:
    """Declare `handler(session, event)` as a Dramatiq actor on `queue_name`.

    Retries default to the WORKER_* settings; past them the message lands in Dramatiq's
    dead-letter queue and the EventContext middleware logs it with its event id.

    With `stepwise`, the handler is `handler(steps, event)` and opens its own transactions
    (EventSteps) instead of running in one.
    """
    settings = get_settings()
    options.setdefault("max_retries", settings.worker_max_retries)
    options.setdefault("min_backoff", settings.worker_min_backoff_ms)
    options.setdefault("max_backoff", settings.worker_max_backoff_ms)
    sessions = session_factory or WorkerResources.session_factory

    def decorator(handler: Any) -> dramatiq.Actor[[dict[str, Any]], None]:
        name = actor_name or handler.__name__

        def run(envelope: dict[str, Any]) -> None:
            # Dramatiq runs async code on its event-loop thread, where the context the
            # middleware bound in this worker thread would be lost: run it in a copy.
            context = contextvars.copy_context()

            async def in_context() -> None:
                await asyncio.create_task(
                    apply_named_event(name, envelope, sessions()), context=context
                )

            get_event_loop_thread().run_coroutine(in_context())  # type: ignore[union-attr]

        run.__name__ = run.__qualname__ = name
        actor: dramatiq.Actor[[dict[str, Any]], None] = dramatiq.actor(  # type: ignore[call-overload]
            run, actor_name=name, queue_name=queue_name, broker=broker, **options
        )
        DECLARED_EVENT_ACTORS[handler.__module__, name] = actor
        if stepwise:
            STEPWISE_HANDLERS[name] = handler
        else:
            EVENT_HANDLERS[name] = handler
        return actor

    return decorator
