"""Scrub anything that looks like a provider key or a bearer token from text and log events."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

REDACTED = "[redacted]"

_PATTERNS = [
    re.compile(r"sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}"),  # OpenAI, Anthropic
    re.compile(r"AIza[0-9A-Za-z_\-]{20,}"),  # Google / Gemini
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{8,}=*"),
    re.compile(
        r"(?i)(api[_-]?key|x-api-key|api-key|authorization)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]{8,}"
    ),
    re.compile(r"\b(?:sfk|sfr|sfi)_[A-Za-z0-9_\-]{16,}"),  # our own API, refresh, invite tokens
    re.compile(r"\b[0-9a-f]{32}\b"),  # Azure OpenAI keys (32 hex)
]


def _any_of(patterns: list[re.Pattern[str]]) -> re.Pattern[str]:
    parts = []
    for pattern in patterns:
        # Only case can be scoped to one alternative; another flag would be lost, and the
        # pre-check would then let through what the pattern itself would have scrubbed.
        if pattern.flags & ~(re.IGNORECASE | re.UNICODE):
            raise ValueError(f"redaction pattern {pattern.pattern!r}: only (?i) is supported")
        body = pattern.pattern.removeprefix("(?i)")
        parts.append(f"(?i:{body})" if pattern.flags & re.IGNORECASE else f"(?:{body})")
    return re.compile("|".join(parts))


# One scan that finds whether any pattern matches: most log values match none, and then
# cost one pass instead of one per pattern.
_ANY = _any_of(_PATTERNS)


def redact(text: str) -> str:
    if _ANY.search(text) is None:
        return text
    for pattern in _PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact_event(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: the last line of defence, run on every log event."""
    for key, value in list(event_dict.items()):
        if key not in {"request_id", "trace_id", "event_id", "timestamp"}:
            event_dict[key] = _scrub(value)
    return event_dict
