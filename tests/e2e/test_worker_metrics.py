"""`socialflow worker` serves Dramatiq's Prometheus metrics for all its processes on
WORKER_METRICS_PORT: after a real message is processed, a scrape counts it per actor and queue."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable

import dramatiq
from prometheus_client.parser import text_string_to_metric_families

from socialflow.outbox.events import Event
from socialflow.workers.broker import create_broker
from tests.e2e.conftest import CommandRun, free_port

Start = Callable[..., CommandRun]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_processed_message_is_counted_by_the_workers_metrics(
    run_command: Start, database_url: str, redis_url: str
) -> None:
    port = free_port()
    worker = run_command(
        ["worker", "--queues", "email", "--processes", "2"],
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        WORKER_METRICS_PORT=str(port),
    )
    # An event of a tenant that does not exist: the actor runs, drops it and succeeds.
    envelope = Event(
        event_id=uuid.uuid4(),
        event_type="member.invited",
        tenant="nobody",
        aggregate_type="invitation",
        aggregate_id="x",
        payload={"invitation_id": str(uuid.uuid4())},
        tenant_id=uuid.uuid4(),
    ).to_message_arg()
    broker = create_broker(redis_url)
    broker.enqueue(
        dramatiq.Message(
            queue_name="email",
            actor_name="send_invitation_email",
            args=(envelope,),
            kwargs={},
            options={},
        )
    )
    key = (
        "dramatiq_messages_total",
        (("actor_name", "send_invitation_email"), ("queue_name", "email")),
    )
    deadline = time.monotonic() + 90
    while _scrape(port).get(key, 0.0) < 1:
        assert worker.process.poll() is None, worker.output
        assert time.monotonic() < deadline, "the processed message was never counted"
        time.sleep(0.5)
    samples = _scrape(port)
    assert samples[key] == 1
    duration = (
        "dramatiq_message_duration_milliseconds_count",
        (("actor_name", "send_invitation_email"), ("queue_name", "email")),
    )
    assert samples[duration] == 1
    broker.close()
