"""A worker process's heartbeat, in process: what it writes follows its fetch loops and its
event loop, and the probe server's reading of the files turns liveness red for a stalled loop,
a stale heartbeat, or no process at all once booting is over."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread

from socialflow.workers.broker import create_broker
from socialflow.workers.probes import Heartbeat, heartbeats


@pytest.fixture
def event_loop_thread() -> Iterator[EventLoopThread]:
    assert get_event_loop_thread() is None
    thread = EventLoopThread(logging.getLogger("test"))
    thread.start()
    set_event_loop_thread(thread)
    yield thread
    set_event_loop_thread(None)
    thread.stop()  # type: ignore[no-untyped-call]


def _seen(folder: Path) -> dict[str, object]:
    (path,) = folder.glob("live-*.json")
    seen: dict[str, object] = json.loads(path.read_text())
    return seen


def test_a_blocked_event_loop_and_a_stopped_fetch_loop_are_reported_and_fail_liveness(
    tmp_path: Path, redis_url: str, event_loop_thread: EventLoopThread
) -> None:
    broker = create_broker(redis_url)
    broker.consumer_turns["email"] = time.monotonic()
    beat = Heartbeat(str(tmp_path), every_s=0.1)
    beat.write(broker)
    time.sleep(0.2)  # the loop answered the first question
    beat.write(broker)
    live, detail = heartbeats(tmp_path, timeout_s=1.0, started=time.time())
    assert live, detail

    release = threading.Event()
    event_loop_thread.loop.call_soon_threadsafe(release.wait)  # an actor blocking its loop
    try:
        time.sleep(1.2)
        beat.write(broker)
        seen = _seen(tmp_path)
        assert seen["event_loop_s"] >= 1.0  # type: ignore[operator]
        assert seen["fetch_loops_s"]["email"] >= 1.0  # type: ignore[index]
        live, detail = heartbeats(tmp_path, timeout_s=1.0, started=time.time())
        assert not live
        (process,) = detail["processes"].values()
        assert sorted(process["stalled"]) == ["email", "event_loop"]
    finally:
        release.set()

    broker.consumer_turns["email"] = time.monotonic()
    time.sleep(0.2)
    beat.write(broker)
    time.sleep(0.2)
    beat.write(broker)
    assert heartbeats(tmp_path, timeout_s=1.0, started=time.time())[0]
    broker.close()


def test_a_stale_heartbeat_fails_and_no_heartbeat_passes_only_while_booting(
    tmp_path: Path,
) -> None:
    assert heartbeats(tmp_path, timeout_s=5.0, started=time.time())[0]
    assert not heartbeats(tmp_path, timeout_s=5.0, started=time.time() - 6)[0]

    path = tmp_path / "live-123.json"
    path.write_text(json.dumps({"pid": 123, "fetch_loops_s": {"email": 0.1}, "event_loop_s": 0.1}))
    assert heartbeats(tmp_path, timeout_s=5.0, started=0)[0]
    old = time.time() - 10
    os.utime(path, (old, old))
    live, detail = heartbeats(tmp_path, timeout_s=5.0, started=0)
    assert not live
    assert detail["processes"]["123"]["stalled"] == ["heartbeat"]


def test_a_process_that_never_beats_fails_liveness_once_booting_is_over(tmp_path: Path) -> None:
    path = tmp_path / "live-7.json"
    path.write_text(json.dumps({"pid": 7, "fetch_loops_s": {"email": 0.1}, "event_loop_s": 0.1}))
    live, detail = heartbeats(tmp_path, timeout_s=5.0, started=time.time(), expected=2)
    assert live  # still booting: the second process may not have beaten yet
    assert detail["missing"] == 1
    live, detail = heartbeats(tmp_path, timeout_s=5.0, started=time.time() - 6, expected=2)
    assert not live
    assert detail["missing"] == 1
