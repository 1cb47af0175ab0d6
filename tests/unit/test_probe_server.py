"""The probe server under probing: readiness is asked of the servers at most once a second
whatever the probes' rate, and a connection that sends nothing is closed instead of holding a
thread, while other probes are answered. The metrics folders of killed commands are tidied."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from socialflow.lib import probes
from socialflow.lib.metrics_folders import metrics_folder
from socialflow.lib.probes import ProbeServer


@pytest.fixture
def asked() -> list[float]:
    return []


@pytest.fixture
def server(asked: list[float], monkeypatch: pytest.MonkeyPatch) -> Iterator[ProbeServer]:
    monkeypatch.setattr(probes, "READ_TIMEOUT_S", 0.5)

    def ready() -> tuple[bool, Mapping[str, Any]]:
        asked.append(time.monotonic())
        return True, {"checks": {"database": "ok"}}

    started = ProbeServer("127.0.0.1", 0, live=lambda: (True, {}), ready=ready).start()
    yield started
    started.stop()


def _get(server: ProbeServer, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as answer:
        body: dict[str, Any] = json.loads(answer.read())
        return body


def test_readiness_is_asked_of_the_servers_once_however_often_it_is_probed(
    server: ProbeServer, asked: list[float]
) -> None:
    for _ in range(20):
        assert _get(server, "/readyz")["checks"] == {"database": "ok"}
    assert len(asked) == 1
    time.sleep(probes.READY_CACHE_S + 0.1)
    _get(server, "/readyz")
    assert len(asked) == 2


def test_a_silent_connection_is_closed_and_others_are_answered_meanwhile(
    server: ProbeServer,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        assert _get(server, "/livez")["status"] == "ok"
        silent.settimeout(5)
        started = time.monotonic()
        assert silent.recv(1024) == b""  # closed by the server, having sent nothing
        assert time.monotonic() - started < 3


def test_a_metrics_folder_left_by_a_killed_command_is_removed_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now
    left = tmp_path / f"socialflow-worker-metrics-{gone.pid}-abc"
    left.mkdir()
    running = tmp_path / f"socialflow-worker-metrics-{os.getpid()}-def"
    running.mkdir()
    other_kind = tmp_path / f"socialflow-api-metrics-{gone.pid}-ghi"
    other_kind.mkdir()

    made = Path(metrics_folder("worker"))

    assert made.is_dir()
    assert made.name.startswith(f"socialflow-worker-metrics-{os.getpid()}-")
    assert not left.exists()
    assert running.exists()  # a command still running keeps its own
    assert other_kind.exists()  # the API's folders are the API's to tidy
