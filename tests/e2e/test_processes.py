"""`socialflow dev`, `relay` and `worker` as real processes: start, readiness, clean stops."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from socialflow.devserver import PROCESSES
from tests.e2e.conftest import CommandRun, free_port

Start = Callable[..., CommandRun]


def _get(url: str) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def _children(run: CommandRun) -> dict[str, psutil.Process]:
    """The dev supervisor's processes (api, relay, worker, ai-worker), by name."""
    found = {}
    for child in psutil.Process(run.process.pid).children():
        command = tuple(child.cmdline())
        for name, args in PROCESSES.items():
            if command[-len(args) :] == args:
                found[name] = child
    return found


def _ready_dev(run_command: Start, database_url: str, redis_url: str, port: int) -> CommandRun:
    """`socialflow dev` on `port`, once it says it is ready."""
    dev = run_command(["dev"], DATABASE_URL=database_url, REDIS_URL=redis_url, PORT=str(port))
    dev.wait_for_output("SocialFlow is ready at", timeout_s=90)
    return dev


def test_dev_runs_api_relay_and_worker_and_ctrl_c_stops_them_all(
    run_command: Start, database_url: str, quiet_redis_url: str
) -> None:
    port = free_port()
    dev = _ready_dev(run_command, database_url, quiet_redis_url, port)
    assert f"http://127.0.0.1:{port}/schema" in dev.output
    assert _get(f"http://127.0.0.1:{port}/ready") == (
        200,
        {"status": "ready", "checks": {"database": "ok", "redis": "ok"}},
    )
    children = _children(dev)
    assert set(children) == {"api", "relay", "worker", "ai-worker", "webhooks-worker"}
    # The printed bootstrap operator can sign in.
    login = dev.output.split("Operator login: ", 1)[1].split()
    email, password = login[0], login[2]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/auth/token",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["token_type"] == "Bearer"

    dev.signal(signal.SIGINT)
    assert dev.wait() == 0
    for name, child in children.items():
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, name


def test_dev_stops_the_others_and_says_which_died(
    run_command: Start, database_url: str, quiet_redis_url: str
) -> None:
    dev = _ready_dev(run_command, database_url, quiet_redis_url, free_port())
    children = _children(dev)
    children["relay"].kill()

    assert dev.wait() == 1
    assert "relay killed by SIGKILL" in dev.output
    for name in ("api", "worker", "ai-worker", "webhooks-worker"):
        assert not children[name].is_running() or children[name].status() == psutil.STATUS_ZOMBIE


def test_dev_with_no_urls_starts_and_stops_embedded_postgres_and_redis(
    run_command: Start, tmp_path: Path
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    dev = run_command(["dev"], DATA_DIR=str(data_dir), PORT=str(port))
    dev.wait_for_output("SocialFlow is ready at", timeout_s=120)
    assert "embedded PostgreSQL, Redis" in dev.output
    assert _get(f"http://127.0.0.1:{port}/ready")[0] == 200
    servers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(str(data_dir) in part for part in (p.info["cmdline"] or []))
    ]
    assert {("postgres" in " ".join(p.info["cmdline"])) for p in servers} == {True, False}

    dev.signal(signal.SIGINT)
    assert dev.wait(timeout_s=60) == 0
    assert not [p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    # Data is kept between runs (only tests throw theirs away).
    assert (data_dir / "postgres" / "PG_VERSION").exists()


@pytest.mark.parametrize(
    ("command", "started"),
    [("relay", "relay.started"), ("worker", "Worker process is ready")],
)
def test_relay_and_worker_connect_and_stop_cleanly_on_sigterm(
    run_command: Start, database_url: str, quiet_redis_url: str, command: str, started: str
) -> None:
    run = run_command([command], DATABASE_URL=database_url, REDIS_URL=quiet_redis_url)
    run.wait_for_output(started)
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert "Traceback" not in run.output


def test_a_worker_stopped_by_sigterm_to_its_whole_process_group_stops_cleanly(
    run_command: Start, database_url: str, quiet_redis_url: str
) -> None:
    # systemd (KillMode=control-group) and a shell's kill -- -PGID signal every process: each
    # worker process gets the signal, then Dramatiq's main process forwards it again.
    worker = run_command(
        ["worker", "--queues", "email", "--processes", "2"],
        DATABASE_URL=database_url,
        REDIS_URL=quiet_redis_url,
        WORKER_METRICS_PORT="0",
    )
    deadline = time.monotonic() + 60
    while worker.output.count("Worker process is ready for action") < 2:
        assert worker.process.poll() is None, worker.output
        assert time.monotonic() < deadline, worker.output
        time.sleep(0.1)
    os.killpg(worker.process.pid, signal.SIGTERM)
    assert worker.wait(timeout_s=30) == 0, worker.output
    assert "Killing worker process" not in worker.output


def test_dev_whose_terminal_closes_stops_every_process(
    run_command: Start, database_url: str, quiet_redis_url: str
) -> None:
    # A closed terminal sends SIGHUP to its whole process group: dev, and every process below.
    dev = _ready_dev(run_command, database_url, quiet_redis_url, free_port())
    deadline = time.monotonic() + 60
    while dev.output.count("Worker process is ready for action") < 3:
        assert time.monotonic() < deadline, dev.output
        time.sleep(0.1)
    everyone = psutil.Process(dev.process.pid).children(recursive=True)
    os.killpg(dev.process.pid, signal.SIGHUP)
    assert dev.wait(timeout_s=60) == 0, dev.output
    assert "Killing worker process" not in dev.output
    for process in everyone:
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE, process
