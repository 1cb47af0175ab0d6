"""`socialflow worker` serves, on WORKER_METRICS_PORT, Dramatiq's Prometheus metrics for all its
processes (after a real message is processed, a scrape counts it per actor and queue) and its
probes, asked as Kubernetes would: liveness follows each worker process's heartbeat (a frozen
process turns it red, and thawed, green again), readiness the servers the workers need."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import psutil
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


def _email_worker(
    run_command: Start, database_url: str, redis_url: str, **env: str
) -> tuple[CommandRun, int]:
    """Two worker processes on the email queue, and the port of their metrics and probes."""
    port = free_port()
    worker = run_command(
        ["worker", "--queues", "email", "--processes", "2"],
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        WORKER_METRICS_PORT=str(port),
        **env,
    )
    return worker, port


def test_a_processed_message_is_counted_by_the_workers_metrics(
    run_command: Start, database_url: str, quiet_redis_url: str
) -> None:
    worker, port = _email_worker(run_command, database_url, quiet_redis_url)
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
    broker = create_broker(quiet_redis_url)
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


def _probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as failed:
        return failed.code, json.loads(failed.read())
    except OSError:
        return 0, {}


def _until(
    worker: CommandRun, port: int, path: str, status: int, timeout_s: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        answer_status, body = _probe(port, path)
        if answer_status == status:
            return body
        assert worker.process.poll() is None, worker.output
        assert time.monotonic() < deadline, f"{path} never answered {status}: {body}"
        time.sleep(0.3)


def test_a_frozen_worker_process_turns_liveness_red_until_it_runs_again(
    run_command: Start, database_url: str, quiet_redis_url: str
) -> None:
    worker, port = _email_worker(
        run_command, database_url, quiet_redis_url, WORKER_LIVENESS_TIMEOUT_S="3"
    )
    body = _until(worker, port, "/livez", 200)
    # Both processes have beaten since their consumers first went round.
    while len(body.get("processes", {})) < 2 or not all(
        p["fetch_loops_s"] for p in body["processes"].values()
    ):
        time.sleep(0.2)
        body = _until(worker, port, "/livez", 200)
    pids = sorted(int(pid) for pid in body["processes"])
    workers = {c.pid for c in psutil.Process(worker.process.pid).children(recursive=True)}
    assert set(pids) <= workers
    for seen in body["processes"].values():
        assert seen["stalled"] == []
        # Each consumer's fetch loop reported by the real consumer (the queue and its delays).
        assert set(seen["fetch_loops_s"]) == {"email", "email.DQ"}

    frozen = pids[0]
    os.kill(frozen, signal.SIGSTOP)
    try:
        body = _until(worker, port, "/livez", 503, timeout_s=30)
        assert body["status"] == "failing"
        assert "heartbeat" in body["processes"][str(frozen)]["stalled"]
        assert body["processes"][str(pids[1])]["stalled"] == []
    finally:
        os.kill(frozen, signal.SIGCONT)
    _until(worker, port, "/livez", 200, timeout_s=30)

    ready = _until(worker, port, "/readyz", 200)
    assert ready["checks"] == {"database": "ok", "redis": "ok"}
