"""Helpers to run `socialflow` commands as real processes and watch what they print."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class CommandRun:
    """A `socialflow …` process whose combined output is collected as it arrives."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "socialflow", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_output(self, text: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output:
                return
            if self.process.poll() is not None:
                self._reader.join(timeout=2)
                if text in self.output:
                    return
                raise AssertionError(
                    f"exited {self.process.returncode} before {text!r}:\n{self.output}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.output}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=2)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def run_command(project_root: Path, tmp_path: Path) -> Iterator[object]:
    runs: list[CommandRun] = []

    def start(args: list[str], **env: str) -> CommandRun:
        # Embedded servers and the dev vault key ring go to a throwaway folder unless a test
        # names one.
        defaults = {"LOG_FORMAT": "console", "DATA_DIR": str(tmp_path / "data")}
        run = CommandRun(args, {**os.environ, **defaults, **env}, project_root)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


# Database numbers no other test's messages reach (tests use 0, Redis's default).
QUIET_DB = 1
PIPELINE_DB = 2


def redis_database(redis_url: str, number: int) -> str:
    """The same Redis server as `redis_url`, on database `number`, emptied."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        url = f"unix://{parts.path}?db={number}"
    else:
        url = urlunsplit(parts._replace(path=f"/{number}"))
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def quiet_redis_url(redis_url: str) -> Iterator[str]:
    """The tests' Redis server, on a database of its own, emptied before and after.

    A worker started on the shared database also takes the messages other tests left queued
    (their tenants, their vault keys): a test that counts what a worker did, or reads its
    output for errors, gives it this one instead."""
    yield redis_database(redis_url, QUIET_DB)
    redis_database(redis_url, QUIET_DB)
