"""OpenTelemetry traces with an in-memory exporter: one trace runs from an HTTP request, through
the outbox and the real relay, into the actor the worker's middleware runs and the webhook it
sends; errors leave their type, never their text; a library's lone call is not a trace; off
(the default), nothing is traced or patched."""

from __future__ import annotations

import json
from typing import Any

import dramatiq
import httpx
import pytest
import redis as redis_lib
from dramatiq.broker import MessageProxy
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from socialflow.db.engine import create_engine
from socialflow.event_routing import ROUTES
from socialflow.lib import telemetry
from socialflow.settings import Settings
from socialflow.workers.actors import apply_named_event
from socialflow.workers.broker import NAMESPACE
from socialflow.workers.middleware import EventContext
from tests.integration.conftest import RelayFactory
from tests.integration.social.fake_receiver import FakeReceiver
from tests.integration.webhooks.conftest import Hooks

WEBHOOKS_QUEUE = "webhooks"


def _take_messages(client: redis_lib.Redis) -> list[dict[str, Any]]:
    """The webhooks queue's messages, removed from it (this test is their worker)."""
    ids = client.lrange(f"{NAMESPACE}:{WEBHOOKS_QUEUE}", 0, -1)
    if not ids:
        return []
    raw = client.hmget(f"{NAMESPACE}:{WEBHOOKS_QUEUE}.msgs", ids)
    client.delete(f"{NAMESPACE}:{WEBHOOKS_QUEUE}", f"{NAMESPACE}:{WEBHOOKS_QUEUE}.msgs")
    return [json.loads(data) for data in raw if data is not None]


async def _work(hooks: Hooks, middleware: EventContext, raw: dict[str, Any]) -> None:
    """What a worker thread does with one message: the middleware's hooks around the actor."""
    message = MessageProxy(dramatiq.Message(**{k: raw[k] for k in _MESSAGE_FIELDS if k in raw}))
    broker = dramatiq.get_broker()
    middleware.before_process_message(broker, message)
    error = None
    try:
        await apply_named_event(message.actor_name, message.args[0], hooks.factory)
    except Exception as exc:
        error = exc
    finally:
        middleware.after_process_message(broker, message, exception=error)


_MESSAGE_FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id")


def _by_id(finished: tuple[ReadableSpan, ...]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in finished if s.context is not None}


def _ancestors(span: ReadableSpan, index: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in index:
        span = index[span.parent.span_id]
        chain.append(span)
    return chain


async def test_one_trace_runs_from_the_request_through_the_outbox_into_the_actor_and_its_call(
    spans: InMemorySpanExporter,
    hooks: Hooks,
    receiver: FakeReceiver,
    make_relay: RelayFactory,
    redis_client: redis_lib.Redis,
) -> None:
    await hooks.create(receiver, "settings.*")
    relay = make_relay(routes=ROUTES)
    while await relay.dispatch_batch():  # the endpoint's own events: not this trace
        pass
    _take_messages(redis_client)
    spans.clear()

    await hooks.change_settings("Traced")
    middleware = EventContext()
    for _ in range(10):  # the relay, then the worker, until the receiver has the event
        await relay.dispatch_batch()
        for raw in _take_messages(redis_client):
            await _work(hooks, middleware, raw)
        if any(d.verified for d in receiver.deliveries):
            break
    [delivery] = [d for d in receiver.deliveries if d.verified]

    finished = spans.get_finished_spans()
    index = _by_id(finished)
    [request] = [s for s in finished if s.kind is SpanKind.SERVER]
    assert request.name == "PUT /api/v1/tenants/{tenant}/settings"
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/api/v1/tenants/{tenant}/settings"
    assert request.attributes["http.response.status_code"] == 200
    assert request.context is not None
    trace_id = request.context.trace_id
    # The request's SQL is in its trace, under it.
    statements = [s for s in finished if s.attributes and s.attributes.get("db.system")]
    assert any(request in _ancestors(s, index) for s in statements if s.kind is SpanKind.CLIENT)

    # The relay's batch: a trace of its own, linked to the request that emitted the event.
    batches = [s for s in finished if s.name == "outbox dispatch"]
    assert any(link.context.span_id == request.context.span_id for b in batches for link in b.links)
    # The actor continues the request's trace: its first run is the request's child.
    actors = [s for s in finished if s.kind is SpanKind.CONSUMER]
    assert actors
    assert {s.name for s in actors} == {"deliver_webhooks process"}
    assert all(s.context is not None and s.context.trace_id == trace_id for s in actors)
    assert any(s.parent is not None and s.parent.span_id == request.context.span_id for s in actors)
    # The webhook's POST: a client span under an actor span, in the same trace, its URL kept to
    # the origin; the receiver got the same trace in its traceparent.
    [call] = [
        s
        for s in finished
        if s.kind is SpanKind.CLIENT
        and s.attributes
        and "POST" in (s.attributes.get("http.request.method"), s.attributes.get("http.method"))
    ]
    assert call.context is not None
    assert call.context.trace_id == trace_id
    assert any(a.kind is SpanKind.CONSUMER for a in _ancestors(call, index))
    assert call.attributes is not None
    origin = f"http://127.0.0.1:{httpx.URL(receiver.url).port}"
    assert call.attributes["url.full"] == call.attributes["http.url"] == origin
    assert delivery.headers["traceparent"].split("-")[1] == f"{trace_id:032x}"


async def test_with_tracing_off_nothing_is_traced_or_patched(hooks: Hooks) -> None:
    assert not telemetry.TRACING.on  # the default: no OTEL_* variable asks for traces
    assert not hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__")
    assert not hasattr(redis_lib.Redis.execute_command, "__wrapped__")
    await hooks.change_settings("Untraced")
    # The request's event still carries a W3C traceparent (logs join on its trace id).
    [row] = hooks.pg.execute(
        "SELECT headers->>'traceparent' FROM shared.outbox WHERE event_type = 'settings.updated'"
    ).fetchall()
    assert str(row[0]).startswith("00-")


async def test_spans_keep_an_errors_type_never_its_message_or_values(
    spans: InMemorySpanExporter, settings: Settings
) -> None:
    engine = create_engine(settings)  # made while tracing is on: its statements are traced
    secret = "sfk_" + "s" * 40
    span, token = telemetry.start_span("job", kind="internal")
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError):
                # The value reaches PostgreSQL's error text (and SQLAlchemy's) in full.
                await conn.execute(text("SELECT CAST(:v AS integer)"), {"v": secret})
        telemetry.end_span(span, token, error=ValueError(f"provider said {secret}"))
    finally:
        await engine.dispose()
    finished = spans.get_finished_spans()
    statements = [s for s in finished if s.attributes and s.attributes.get("db.system")]
    assert statements
    assert any(s.status.status_code is StatusCode.ERROR for s in statements)
    exported = str([(s.name, s.attributes, s.status.description, s.events) for s in finished])
    assert secret not in exported
    assert all(s.status.description is None for s in finished)
    [job] = [s for s in finished if s.name == "job"]
    assert job.attributes is not None
    assert job.attributes["exception.type"] == "ValueError"


async def test_a_librarys_call_outside_any_span_is_not_traced(
    spans: InMemorySpanExporter, redis_client: redis_lib.Redis
) -> None:
    assert redis_client.ping()  # Dramatiq's polling, a readiness check: no trace of its own
    assert spans.get_finished_spans() == ()
    span, token = telemetry.start_span("job", kind="internal")
    assert redis_client.ping()
    telemetry.end_span(span, token)
    names = sorted(s.name for s in spans.get_finished_spans())
    assert names == ["PING", "job"]
