"""structlog configuration: JSON in production, readable in dev; request context in every line."""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
import structlog

from socialflow.lib.redaction import redact_event
from socialflow.settings import LogFormat, Settings

# Context every log line carries while it is bound (request, tenant, event).
CONTEXT_KEYS = ("request_id", "tenant", "event_id", "actor")
_HANDLER_NAME = "socialflow"


def configure_logging(settings: Settings) -> None:
    """Route structlog and the standard library through one renderer."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    # Tracebacks are rendered to text here, so the scrubber sees them too.
    shared.append(structlog.processors.format_exc_info)
    shared.append(redact_event)
    renderer: structlog.types.Processor
    if settings.effective_log_format is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        # Drop filtered-out lines before any processor runs (hot paths log at info).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = _LineFormatter(
        renderer,
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    # A record's thread, process and calling frame are never rendered: not collecting them
    # halves the cost of the line every request writes. (`_srcfile = None` is the logging
    # module's own documented switch for skipping the caller lookup.)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Replace only our own handler, so calling this twice (or under pytest) adds no duplicates.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(settings.log_level.upper())
    # Access logs repeat what our request logging says, without the request id.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("LiteLLM", "litellm", "httpx", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class _LineFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders our own records, already processed by structlog, straight from their event
    dict; other libraries' records go through the processor chain first."""

    def __init__(self, renderer: structlog.types.Processor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._render = renderer

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict) and not record.exc_info:
            return str(self._render(None, record.levelname.lower(), dict(record.msg)))
        return super().format(record)


def _json_line(event: Any, default: Any = None, **_: Any) -> str:
    """One log line as compact JSON, encoded by msgspec (a fraction of json.dumps' cost on the
    line every request writes); what it cannot encode is rendered by structlog's fallback."""
    return msgspec.json.encode(event, enc_hook=default).decode()


def bind_context(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()
