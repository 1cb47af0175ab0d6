"""`socialflow api --workers N`: N processes, each with its own socket on the port (the kernel
spreads connections among them), a dead one replaced, all stopped by SIGTERM; a port that is
already taken is refused, not shared."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import CommandRun, free_port

Start = Callable[..., CommandRun]


def _api_processes(run: CommandRun) -> list[psutil.Process]:
    """The supervisor's live API processes (multiprocessing spawns them with `spawn_main`)."""
    found = []
    for child in psutil.Process(run.process.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone meanwhile
            continue
    return found


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _ready(port: int) -> bool:
    """GET /ready, waited for to the end: a request the tests count, and nothing else sends.

    (The waits poll /health with a short timeout: a poll given up on while a process was still
    starting stays queued on the socket and is answered, and counted, later.)"""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=60) as response:
        return response.status == 200


def _listeners(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    )


def test_two_processes_each_listen_a_dead_one_is_replaced_and_sigterm_stops_all(
    run_command: Start, database_url: str, redis_url: str
) -> None:
    port = free_port()
    api = run_command(
        ["api", "--workers", "2"], DATABASE_URL=database_url, REDIS_URL=redis_url, PORT=str(port)
    )
    _wait_for(lambda: _healthy(port) and len(_api_processes(api)) == 2)
    first, second = _api_processes(api)
    _wait_for(lambda: _listeners(first.pid, port) == 1 and _listeners(second.pid, port) == 1)
    assert _listeners(api.process.pid, port) == 0  # the supervisor accepts nothing itself

    first.kill()
    _wait_for(
        lambda: (
            len(_api_processes(api)) == 2 and first.pid not in {p.pid for p in _api_processes(api)}
        )
    )
    _wait_for(lambda: _healthy(port))
    api.wait_for_output("api.process_exited")  # read from its pipe by a thread: it may lag

    survivors = _api_processes(api)
    api.signal(signal.SIGTERM)
    assert api.wait() == 0
    for process in survivors:
        assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert not _healthy(port)


def test_a_port_already_listened_on_is_refused(
    run_command: Start, database_url: str, redis_url: str
) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would share
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        api = run_command(
            ["api", "--workers", "2"],
            DATABASE_URL=database_url,
            REDIS_URL=redis_url,
            PORT=str(port),
            HOST="127.0.0.1",
        )
        assert api.wait(timeout_s=60) != 0
    assert f"cannot listen on 127.0.0.1:{port}" in api.output


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_of_either_process_counts_the_requests_of_both(
    run_command: Start, database_url: str, redis_url: str
) -> None:
    port = free_port()
    api = run_command(
        ["api", "--workers", "2"], DATABASE_URL=database_url, REDIS_URL=redis_url, PORT=str(port)
    )
    _wait_for(lambda: _healthy(port) and len(_api_processes(api)) == 2)
    key = (
        "socialflow_api_requests_total",
        (("method", "GET"), ("route", "/ready"), ("status", "200")),
    )
    before = _scrape(port).get(key, 0.0)
    # Fresh connections: the kernel spreads them over both processes.
    sent = 40
    for _ in range(sent):
        assert _ready(port)
    counts = [_scrape(port).get(key, 0.0) - before for _ in range(4)]
    assert counts == [sent] * 4  # whichever process answered the scrape
    api.signal(signal.SIGTERM)
    assert api.wait() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_with_a_metrics_port_the_metrics_leave_the_api_port_for_it(
    run_command: Start, database_url: str, redis_url: str, workers: str
) -> None:
    port, metrics_port = free_port(), free_port()
    api = run_command(
        ["api", "--workers", workers],
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PORT=str(port),
        API_METRICS_PORT=str(metrics_port),
    )
    spawned = 0 if workers == "1" else int(workers)  # one process serves by itself
    _wait_for(lambda: _healthy(port) and len(_api_processes(api)) == spawned)
    key = (
        "socialflow_api_requests_total",
        (("method", "GET"), ("route", "/ready"), ("status", "200")),
    )
    before = _scrape(metrics_port).get(key, 0.0)
    sent = 12
    for _ in range(sent):
        assert _ready(port)
    # Every process's requests, on the port of its own. (Twice in CI a scrape right after the
    # last answer found one request short, never reproduced alone: the scrape is retried for a
    # few seconds, and a shortfall that stays names the processes that served the requests.)
    deadline = time.monotonic() + 10
    while (counted := _scrape(metrics_port).get(key, 0.0)) < before + sent:
        if time.monotonic() > deadline:
            served = [line for line in api.output.splitlines() if "path=/ready" in line]
            raise AssertionError(f"{counted} of {before + sent} counted; served: {served}")
        time.sleep(0.2)
    assert counted == before + sent
    with pytest.raises(urllib.error.HTTPError) as missing:
        _scrape(port)
    assert missing.value.code == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=10) as answer:
        assert json.loads(answer.read())["checks"] == {"database": "ok", "redis": "ok"}
    api.signal(signal.SIGTERM)
    # One process is uvicorn itself, which ends by raising the signal it stopped for again.
    assert api.wait() == (0 if spawned else -signal.SIGTERM)
