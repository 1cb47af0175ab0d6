"""At start, say whether the broker Redis keeps what the relay hands it.

The relay deletes outbox rows once Redis acknowledged their messages. That acknowledgement
means "on disk" only with an append-only file fsynced on every write (`appendfsync always`), and
"on another machine" only when the relay waits for replicas (`RELAY_REDIS_MIN_REPLICAS`).
With neither, a Redis crash loses events the outbox no longer holds; with an eviction policy
other than `noeviction`, a full Redis drops queued messages. Neither stops the relay: the
operator may know better (a managed Redis with its own guarantees), so it is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import structlog

log = structlog.get_logger("outbox_relay")


@dataclass(frozen=True)
class BrokerDurability:
    """What the broker Redis answered to `CONFIG GET` (None: it refused, as managed ones do)."""

    appendonly: str | None
    appendfsync: str | None
    maxmemory: int | None
    maxmemory_policy: str | None

    @property
    def fsyncs_every_write(self) -> bool:
        return self.appendonly == "yes" and self.appendfsync == "always"

    @property
    def may_evict(self) -> bool:
        return bool(self.maxmemory) and self.maxmemory_policy not in {None, "noeviction"}


def read_durability(client: redis.Redis) -> BrokerDurability:
    """The broker's persistence and eviction settings; None for what CONFIG GET refuses."""
    config: dict[str, str] = {}
    try:
        for name in ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy"):
            config.update((str(k), str(v)) for k, v in client.config_get(name).items())
    except redis.ResponseError:  # CONFIG renamed or disabled, or the ACL forbids it
        return BrokerDurability(None, None, None, None)
    maxmemory = config.get("maxmemory")
    return BrokerDurability(
        appendonly=config.get("appendonly"),
        appendfsync=config.get("appendfsync"),
        maxmemory=int(maxmemory) if maxmemory is not None else None,
        maxmemory_policy=config.get("maxmemory-policy"),
    )


def warn_unless_durable(redis_url: str, min_replicas: int) -> BrokerDurability | None:
    """Log `relay.redis_not_durable` (and `relay.redis_may_evict`) when events could be lost."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        durability = read_durability(client)
    except (redis.RedisError, OSError) as error:
        # The relay backs off until Redis answers; the check is advice, not a precondition.
        log.warning("relay.redis_durability_unchecked", error=str(error))
        return None
    finally:
        client.close()
    if durability.appendonly is None:
        if min_replicas == 0:
            log.warning(
                "relay.redis_not_durable",
                reason="CONFIG GET is refused (a managed Redis?): persistence cannot be checked",
                hint="make sure it persists every write (AOF with appendfsync always), "
                "or set RELAY_REDIS_MIN_REPLICAS to wait for replicas",
            )
        return durability
    if min_replicas == 0 and not durability.fsyncs_every_write:
        log.warning(
            "relay.redis_not_durable",
            reason="no AOF fsynced on every write and no replicas required: "
            "a Redis crash loses events the outbox already deleted",
            appendonly=durability.appendonly,
            appendfsync=durability.appendfsync,
            hint="run the broker Redis with appendonly yes and appendfsync always, "
            "or set RELAY_REDIS_MIN_REPLICAS to wait for replicas",
        )
    if durability.may_evict:
        log.warning(
            "relay.redis_may_evict",
            reason="a full broker Redis evicts keys, queued messages among them",
            maxmemory_policy=durability.maxmemory_policy,
            hint="run the broker Redis with maxmemory-policy noeviction; caches go to "
            "CACHE_REDIS_URL",
        )
    return durability
