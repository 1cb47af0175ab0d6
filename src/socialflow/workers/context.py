"""What a job knows about the event it runs for, set by middleware from the message."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JobContext:
    event_id: str
    actor: str
    tenant: str | None
    request_id: str | None


current_job: ContextVar[JobContext | None] = ContextVar("current_job", default=None)
