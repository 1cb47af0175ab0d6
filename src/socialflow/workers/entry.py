"""What `socialflow worker` hands to Dramatiq: the broker first, then every actor module, then
the routing check (a worker whose actors the relay would not feed refuses to start)."""

from __future__ import annotations

import ctypes

from socialflow.lib import telemetry
from socialflow.lib.logging import configure_logging
from socialflow.settings import get_settings
from socialflow.workers.broker import configure_broker


def _return_freed_memory() -> None:
    """Two malloc arenas, not one per thread. Dramatiq's threads and the media encoders each
    got an arena of their own, and glibc keeps what an arena once held: a worker that
    processed four 12-megapixel photos at once stayed at ~530 MB resident; with two, ~320 MB
    (bench/media.py), at no measurable cost in time. Not glibc (musl, macOS): nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_arena_max = -8
    libc.mallopt(m_arena_max, 2)


_return_freed_memory()
_settings = get_settings()
if _settings.redis_url is None:
    raise RuntimeError("REDIS_URL must be set for the worker; `socialflow dev` sets it")
configure_logging(_settings)
telemetry.configure("worker")  # only when OTEL_* ask for traces; before any engine or client
broker = configure_broker(_settings.redis_url)

from socialflow import event_routing  # noqa: E402 - checked once the actors are declared
from socialflow.workers import registry  # noqa: E402,F401 - actors bind to the broker above

try:
    event_routing.check_routing()
except event_routing.RoutingError as exc:
    # Dramatiq logs a failed import of this module and stops every worker process.
    raise ImportError(f"the worker refuses to start: {exc}") from None
