"""The transactional outbox: `emit()` writes an event in the caller's transaction; the relay
(`outbox_relay/`) moves committed events to the broker."""

from socialflow.outbox.emit import OutboxError, emit, emit_many

__all__ = ["OutboxError", "emit", "emit_many"]
