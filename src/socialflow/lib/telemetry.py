"""OpenTelemetry traces: off unless the standard OTEL_* variables ask for them, and then spans for
HTTP requests (named by route template), SQL, Redis, outbound HTTP, the relay's batches and each
actor, one trace from a request through the outbox into the actors it caused.

Off (the default) nothing is imported, patched or created: `TRACING.on` is False and every
caller checks it before doing anything, so tracing costs one attribute read per request or message.
On, each process calls `configure(service)` once before it makes engines or clients; the
SQLAlchemy, Redis and httpx instrumentations then cover those libraries, and the W3C
traceparent the outbox already carries (lib.tracing) becomes the real span's, so an actor's
span continues the request's trace.

What spans never hold: raw paths (the route template names the request), SQL parameters (the
instrumentation records statements with placeholders), Redis arguments (sanitized to `CMD ? ?`)
and outbound URLs beyond their origin (webhook and provider URLs may carry secrets in their path
or query).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer


@dataclass
class _Tracing:
    on: bool = False
    provider: TracerProvider | None = None
    tracer: Tracer | None = None


TRACING = _Tracing()


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces: an exporter named in OTEL_TRACES_EXPORTER
    (not `none`), or else an OTLP endpoint; never with OTEL_SDK_DISABLED=true."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    named = env.get("OTEL_TRACES_EXPORTER")
    if named is not None:
        return any(name.strip().lower() not in ("", "none") for name in named.split(","))
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(env.get(name) for name in endpoints)


def configure(service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on for this process when the environment asks (or with `exporter`, a test's
    in-memory one, exporting each span as it ends); True when on. Call before engines and
    clients are made. A second call changes nothing."""
    if TRACING.on:
        return True
    if exporter is None and not wanted():
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    named = os.environ.get("OTEL_SERVICE_NAME")
    attributes = {} if named else {SERVICE_NAME: f"socialflow-{service}"}
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for each in _exporters():
            provider.add_span_processor(BatchSpanProcessor(each))
        trace.set_tracer_provider(provider)  # for libraries asking the global one
    _instrument(provider)
    TRACING.provider, TRACING.tracer = provider, provider.get_tracer("socialflow")
    TRACING.on = True
    return True


def shutdown() -> None:
    """Flush and turn tracing off again (tests; processes flush at exit by themselves)."""
    if not TRACING.on:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    for instrumentor in (SQLAlchemyInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()):
        instrumentor.uninstrument()
    if TRACING.provider is not None:
        TRACING.provider.shutdown()
    TRACING.on, TRACING.provider, TRACING.tracer = False, None, None


def _exporters() -> list[SpanExporter]:
    names = [
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if name.strip().lower() not in ("", "none")
    ]
    found: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            # OTLP over HTTP/protobuf; endpoint, headers, timeout from OTEL_EXPORTER_OTLP_*.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not one of otlp, console, none")
    return found


def _instrument(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses unchanged.
    SQLAlchemyInstrumentor().instrument(
        tracer_provider=provider, enable_commenter=False, skip_dep_check=True
    )
    RedisInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(
        tracer_provider=provider, request_hook=_origin_only, async_request_hook=_async_origin_only
    )


def _origin_only(span: Span, request: Any) -> None:
    """An outbound request's URL kept to its origin: paths and queries may hold secrets."""
    url = request.url
    origin = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    for key in ("url.full", "http.url"):
        span.set_attribute(key, origin)


async def _async_origin_only(span: Span, request: Any) -> None:
    _origin_only(span, request)


# -- spans of our own ----------------------------------------------------------------------


def _parent(traceparent: str | None) -> Context | None:
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def start_span(
    name: str,
    *,
    kind: str,
    parent: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> tuple[Span, object]:
    """A span made current (until `end_span`), child of the W3C `parent` when given, else of
    the current span. `kind`: server, consumer, producer, internal."""
    from opentelemetry import context, trace

    assert TRACING.tracer is not None
    span = TRACING.tracer.start_span(
        name,
        context=_parent(parent),
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=dict(attributes or {}),
    )
    token = context.attach(trace.set_span_in_context(span))
    return span, token


def end_span(span: Span, token: object, *, error: BaseException | None = None) -> None:
    from opentelemetry import context
    from opentelemetry.trace import Status, StatusCode

    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()
    context.detach(token)  # type: ignore[arg-type]


def traceparent_of(span: Span) -> str:
    """The W3C traceparent naming `span`: what events emitted under it carry."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def link_to(span: Span, traceparents: Iterable[str | None], limit: int = 64) -> None:
    """Link `span` (a relay batch) to the spans that emitted its events, up to `limit`."""
    from opentelemetry import trace

    seen: set[str] = set()
    for traceparent in traceparents:
        if not traceparent or traceparent in seen:
            continue
        seen.add(traceparent)
        parent = _parent(traceparent)
        linked = trace.get_current_span(parent).get_span_context() if parent else None
        if linked is not None and linked.is_valid:
            span.add_link(linked)
        if len(seen) >= limit:
            return
