"""The relay's start-up check of the broker Redis: AOF fsynced on every write, or replicas."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from outbox_relay.durability import warn_unless_durable

from socialflow.embedded import EmbeddedRedis

StartRedis = Callable[..., str]


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    servers: list[EmbeddedRedis] = []

    def start(*extra_args: str) -> str:
        server = EmbeddedRedis(
            tmp_path / f"redis-{len(servers)}", throwaway=True, extra_args=extra_args
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def _warnings(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, Any]]:
    return {
        r.msg["event"]: r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.levelno == logging.WARNING
    }


def test_a_broker_without_aof_and_no_required_replicas_is_warned_about(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    warn_unless_durable(start_redis(), min_replicas=0)  # a throwaway Redis: no AOF
    warning = _warnings(caplog)["relay.redis_not_durable"]
    assert warning["appendonly"] == "no"


def test_aof_fsynced_every_write_is_not_warned_about(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = start_redis("--appendonly", "yes", "--appendfsync", "always")
    warn_unless_durable(url, min_replicas=0)
    assert _warnings(caplog) == {}


def test_aof_fsynced_every_second_is_warned_about(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    warn_unless_durable(start_redis("--appendonly", "yes"), min_replicas=0)
    assert _warnings(caplog)["relay.redis_not_durable"]["appendfsync"] == "everysec"


def test_required_replicas_stand_in_for_aof(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    warn_unless_durable(start_redis(), min_replicas=1)
    assert _warnings(caplog) == {}


def test_a_redis_refusing_config_get_is_warned_about_as_unverifiable(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Managed Redis services disable CONFIG like this.
    warn_unless_durable(start_redis("--rename-command", "CONFIG", ""), min_replicas=0)
    assert "CONFIG GET is refused" in _warnings(caplog)["relay.redis_not_durable"]["reason"]


def test_an_evicting_broker_is_warned_about(
    start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = start_redis(
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "allkeys-lru",
    )
    warn_unless_durable(url, min_replicas=0)
    assert set(_warnings(caplog)) == {"relay.redis_may_evict"}


def _shipped_broker_args() -> dict[str, list[str]]:
    """The broker Redis' options in compose.yaml and k8s/redis.yaml (its --dir left out)."""
    infra = Path(__file__).resolve().parents[3] / "infra"
    compose = yaml.safe_load((infra / "compose.yaml").read_text())
    (broker,) = [
        d
        for d in yaml.safe_load_all((infra / "k8s" / "redis.yaml").read_text())
        if d["kind"] == "StatefulSet"
    ]
    found = {
        "compose": compose["services"]["redis"]["command"],
        "k8s": broker["spec"]["template"]["spec"]["containers"][0]["args"],
    }
    options = {}
    for where, args in found.items():
        options[where] = args[1:]  # after "redis-server"
        if "--dir" in options[where]:  # our own data dir instead
            at = options[where].index("--dir")
            del options[where][at : at + 2]
    return options


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_the_shipped_broker_redis_passes_the_relays_check(
    where: str, start_redis: StartRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    durability = warn_unless_durable(start_redis(*_shipped_broker_args()[where]), min_replicas=0)
    assert durability is not None
    assert durability.fsyncs_every_write
    assert _warnings(caplog) == {}
