"""OpenTelemetry traces: off unless the standard OTEL_* variables ask for them, and then spans for
HTTP requests (named by route template), SQL, Redis, outbound HTTP, the relay's batches and each
actor, one trace from a request through the outbox into the actors it caused.

Off (the default) nothing is configured, patched or created: `TRACING.on` is False and every
caller checks it before doing anything, so tracing costs one attribute read per request or message.
On, each process calls `configure(service)` once before it makes engines or clients; the
SQLAlchemy, Redis and httpx instrumentations then cover those libraries, and the W3C
traceparent the outbox already carries (lib.tracing) becomes the real span's, so an actor's
span continues the request's trace.

What spans never hold: raw paths (the route template names the request), SQL parameters (the
instrumentation records statements with placeholders), Redis arguments (sanitized to `CMD ? ?`),
outbound URLs beyond their origin (webhook and provider URLs may carry secrets in their path or
query), and error messages: a database error's text carries its SQL's values and the rows it
met, a provider's may echo a key, so spans keep an error's type only (`_Scrubbed`).

Spans without a parent that are only a library's call (a SQL statement, a Redis command, an
HTTP request outside any request or actor: Dramatiq's polling, the relay's empty claims) are
not sampled (`_NoLoneCalls`): they would be most of the traces and say nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger(__name__)


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
    if env.get("OTEL_TRACES_EXPORTER") is not None:
        return bool(exporter_names(env))
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(env.get(name) for name in endpoints)


def exporter_names(env: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER names (default otlp), `none` left out."""
    names = (name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "otlp").split(","))
    return [name for name in names if name not in ("", "none")]


def configure(service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on for this process when the environment asks (or with `exporter`, a test's
    in-memory one, exporting each span as it ends); True when on. Call before engines and
    clients are made. A second call changes nothing."""
    if TRACING.on:
        return True
    if exporter is None and not wanted():
        return False
    from socialflow.lib import otel_sdk

    try:
        provider = otel_sdk.provider(service, exporter)
    except ValueError as exc:  # a misconfiguration must not stop the process: no traces
        log.error("tracing.not_configured", error=str(exc))
        return False
    otel_sdk.instrument(provider)
    TRACING.provider, TRACING.tracer = provider, provider.get_tracer("socialflow")
    TRACING.on = True
    return True


def shutdown() -> None:
    """Flush and turn tracing off again (tests; processes flush at exit by themselves)."""
    if not TRACING.on:
        return
    from socialflow.lib import otel_sdk

    otel_sdk.uninstrument()
    if TRACING.provider is not None:
        TRACING.provider.shutdown()
    TRACING.on, TRACING.provider, TRACING.tracer = False, None, None


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

    if error is not None:  # its type only: messages can carry values and secrets
        span.set_attribute("exception.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
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
