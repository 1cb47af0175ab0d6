"""Processes the benchmarks run and kill: `socialflow …` commands in process groups of their
own, and the CPU time a process tree used."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import psycopg
import redis


def progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


class Supervised:
    """A `socialflow …` command in a process group of its own, its log appended to a file;
    `kill` is SIGKILL of the whole group (master and children), then the same command again."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.restarts = 0
        self.popen = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "socialflow", *self.args],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def restart(self) -> None:
        self.restarts += 1
        self.popen = self._start()

    def local_ports(self) -> set[int]:
        """The local ports of the group's TCP connections (its calls to platforms among them)."""
        ports: set[int] = set()
        try:
            root = psutil.Process(self.popen.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return ports
        for process in processes:
            try:
                ports.update(c.laddr.port for c in process.net_connections(kind="tcp"))
            except psutil.NoSuchProcess:
                continue
        return ports

    def stop(self) -> None:
        """SIGTERM to the command's own process, as a container runtime sends it (the
        Dramatiq master then stops its workers; a worker that ALSO gets the group's SIGTERM
        hangs, see the report), then whatever is left of the group killed."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                progress(f"`socialflow {' '.join(self.args)}` ignored SIGTERM for 60 s")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def server_pids(conn: psycopg.Connection[Any], redis_url: str) -> dict[str, int]:
    """The PostgreSQL postmaster's and Redis's process ids, when they run on this machine."""
    found: dict[str, int] = {}
    with contextlib.suppress(psycopg.Error, OSError, ValueError):
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        if row:
            found["PostgreSQL"] = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])
    client = redis.Redis.from_url(redis_url)
    with contextlib.suppress(redis.RedisError, KeyError):
        found["Redis"] = int(client.info("server")["process_id"])
    client.close()
    return {name: pid for name, pid in found.items() if psutil.pid_exists(pid)}
