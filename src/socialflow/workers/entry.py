"""What `socialflow worker` hands to Dramatiq: the broker first, then every actor module, then
the routing check (a worker whose actors the relay would not feed refuses to start)."""

from __future__ import annotations

from socialflow.lib.logging import configure_logging
from socialflow.settings import get_settings
from socialflow.workers.broker import configure_broker

_settings = get_settings()
if _settings.redis_url is None:
    raise RuntimeError("REDIS_URL must be set for the worker; `socialflow dev` sets it")
configure_logging(_settings)
broker = configure_broker(_settings.redis_url)

from socialflow import event_routing  # noqa: E402 - checked once the actors are declared
from socialflow.workers import registry  # noqa: E402,F401 - actors bind to the broker above

try:
    event_routing.check_routing()
except event_routing.RoutingError as exc:
    # Dramatiq logs a failed import of this module and stops every worker process.
    raise ImportError(f"the worker refuses to start: {exc}") from None
