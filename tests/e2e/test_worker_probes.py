"""A worker command's probes on WORKER_METRICS_PORT, asked as Kubernetes would: liveness
follows each worker process's heartbeat (a frozen process turns it red, and thawed, green
again), readiness the servers the workers need."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import psutil

from tests.e2e.conftest import CommandRun, free_port

Start = Callable[..., CommandRun]


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
    run_command: Start, database_url: str, redis_url: str
) -> None:
    port = free_port()
    worker = run_command(
        ["worker", "--queues", "email", "--processes", "2"],
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        WORKER_METRICS_PORT=str(port),
        WORKER_LIVENESS_TIMEOUT_S="3",
    )
    body = _until(worker, port, "/livez", 200)
    while len(body.get("processes", {})) < 2:  # both processes have beaten
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
