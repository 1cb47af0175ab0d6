"""Response bodies of the audit-log endpoint."""

from __future__ import annotations

from datetime import datetime

import msgspec


class AuditEntryOut(msgspec.Struct):
    id: int
    at: datetime
    actor: str | None
    action: str
    target_type: str
    target_id: str
    request_id: str | None
    before: dict[str, object] | None
    after: dict[str, object] | None


class AuditList(msgspec.Struct):
    items: list[AuditEntryOut]
    next_cursor: str | None = None
