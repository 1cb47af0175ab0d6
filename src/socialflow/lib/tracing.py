"""W3C trace context: the traceparent of the current request or job, carried into events."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
current_traceparent: ContextVar[str | None] = ContextVar("traceparent", default=None)


def new_traceparent() -> str:
    ids = secrets.token_hex(24)  # trace id and span id from one read of the OS's randomness
    return f"00-{ids[:32]}-{ids[32:]}-01"


def child_traceparent(parent: str | None) -> str:
    """Same trace, new span id; a fresh trace when the parent is missing or malformed."""
    match = _TRACEPARENT.fullmatch(parent or "")
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return new_traceparent()
    return f"00-{match.group(1)}-{secrets.token_hex(8)}-{match.group(3)}"


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]
