"""The OpenTelemetry SDK side of lib.telemetry, imported only once tracing is turned on: the
provider (its sampler, exporters and the scrubbing of error messages) and the instrumentations
of SQLAlchemy, Redis and httpx."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace import Span as RecordedSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from socialflow.lib.telemetry import exporter_names


def provider(service: str, exporter: SpanExporter | None) -> TracerProvider:
    """The process's tracer provider: exporting to OTEL_TRACES_EXPORTER's exporters in batches
    (and made the global one), or to `exporter` span by span (tests). ValueError when the
    variables name what is not supported."""
    exporters = _exporters() if exporter is None else []
    attributes = (
        {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"socialflow-{service}"}
    )
    made = TracerProvider(resource=Resource.create(attributes), sampler=NoLoneCalls())
    if exporter is not None:
        made.add_span_processor(Scrubbed(SimpleSpanProcessor(exporter)))
        return made
    for each in exporters:
        made.add_span_processor(Scrubbed(BatchSpanProcessor(each)))
    trace.set_tracer_provider(made)  # for libraries asking the global one
    return made


def _exporters() -> list[SpanExporter]:
    """OTEL_TRACES_EXPORTER's exporters (default otlp); ValueError for one not supported."""
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    found: list[SpanExporter] = []
    for name in exporter_names():
        if name in ("otlp", "otlp_proto_http"):
            if protocol.strip().lower() not in ("", "http/protobuf"):
                raise ValueError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: only http/protobuf is supported"
                )
            # Endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_*.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            found.append(OTLPSpanExporter())
        elif name == "console":
            found.append(ConsoleSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER {name!r}: not one of otlp, console, none")
    return found


def instrument(made: TracerProvider) -> None:
    # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses unchanged.
    SQLAlchemyInstrumentor().instrument(
        tracer_provider=made, enable_commenter=False, skip_dep_check=True
    )
    RedisInstrumentor().instrument(tracer_provider=made)
    HTTPXClientInstrumentor().instrument(
        tracer_provider=made, request_hook=_origin_only, async_request_hook=_async_origin_only
    )


def uninstrument() -> None:
    for instrumentor in (SQLAlchemyInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()):
        instrumentor.uninstrument()


def _origin_only(span: Span, request: Any) -> None:
    """An outbound request's URL kept to its origin: paths and queries may hold secrets."""
    url = request.url
    origin = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    for key in ("url.full", "http.url"):
        span.set_attribute(key, origin)


async def _async_origin_only(span: Span, request: Any) -> None:
    _origin_only(span, request)


class NoLoneCalls(sampling.Sampler):
    """OTEL_TRACES_SAMPLER's sampler (default: parent-based, always on), except that a client
    call with no parent (a library's statement or request outside any request, actor or relay
    batch: Dramatiq's polling, a readiness check) is dropped."""

    def __init__(self) -> None:
        self.configured = sampling._get_from_env_or_default()

    def should_sample(  # noqa: PLR0917 - the Sampler interface
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> sampling.SamplingResult:
        lone = not get_current_span(parent_context).get_span_context().is_valid
        if lone and kind is SpanKind.CLIENT:
            return sampling.SamplingResult(sampling.Decision.DROP)
        return self.configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoLoneCalls({self.configured.get_description()})"


class Scrubbed(SpanProcessor):
    """`inner`, given each ended span without error messages: the status keeps its code, an
    exception event its type. The instrumentations put `str(exc)` in both, and a database
    error's text carries its statement's values (and psycopg's DETAIL the row it met)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner

    def on_start(self, span: RecordedSpan, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.status.description:
            span._status = Status(span.status.status_code)
        if any(event.name == "exception" for event in span.events):
            span._events = [
                Event(
                    "exception",
                    {"exception.type": str((e.attributes or {}).get("exception.type"))},
                    e.timestamp,
                )
                if e.name == "exception"
                else e
                for e in span.events
            ]
        self.inner.on_end(span)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
