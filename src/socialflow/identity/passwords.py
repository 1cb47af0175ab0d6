"""Password hashing with argon2id (memory-hard), off the event loop and bounded per process.

Each hash or verification holds PASSWORD_MEMORY_KIB (64 MiB by default) while it runs, so a
burst of sign-ins must not start them all at once: at most PASSWORD_HASH_CONCURRENCY run, the
others wait up to PASSWORD_HASH_WAIT_S for a slot and then get a 503 problem with Retry-After.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from socialflow.lib.problems import Problem
from socialflow.settings import Settings

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
BUSY_RETRY_AFTER_S = 1

T = TypeVar("T")


@dataclass
class HashingLoad:
    """argon2 computations of this process: running now, the most at once, and the total."""

    running: int = 0
    peak: int = 0
    total: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, compute: Callable[[], T]) -> T:
        with self._lock:
            self.running += 1
            self.total += 1
            self.peak = max(self.peak, self.running)
        try:
            return compute()
        finally:
            with self._lock:
                self.running -= 1

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.running


LOAD = HashingLoad()

# asyncio primitives belong to one event loop; the API process has one, tests have several.
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def gate(capacity: int) -> asyncio.Semaphore:
    """The running loop's semaphore of `capacity` argon2 slots."""
    per_loop = _gates.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(capacity, asyncio.Semaphore(capacity))


async def _bounded(settings: Settings, compute: Callable[[], T]) -> T:
    slots = gate(settings.password_hash_concurrency)
    try:
        async with asyncio.timeout(settings.password_hash_wait_s):
            await slots.acquire()
    except TimeoutError:
        raise Problem(
            503,
            "busy",
            "Too many sign-ins are being checked at once; retry shortly.",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        ) from None
    # The slot is freed when the computation ends, not when a cancelled caller stops waiting:
    # the thread keeps its memory until argon2 returns.
    running = asyncio.ensure_future(asyncio.to_thread(LOAD.run, compute))

    def finished(done: asyncio.Future[T]) -> None:
        slots.release()
        if not done.cancelled():
            done.exception()  # retrieved here too, in case the caller is gone

    running.add_done_callback(finished)
    return await asyncio.shield(running)


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def hasher_for(settings: Settings) -> PasswordHasher:
    return _hasher(settings.password_time_cost, settings.password_memory_kib)


async def hash_password(settings: Settings, password: str) -> str:
    hasher = hasher_for(settings)
    return await _bounded(settings, lambda: hasher.hash(password))


async def verify_password(settings: Settings, password_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing hash costs a verification too (no timing oracle)."""
    hasher = hasher_for(settings)
    time_cost, memory_kib = settings.password_time_cost, settings.password_memory_kib

    def check() -> bool:
        target = password_hash or _dummy_hash(time_cost, memory_kib)
        try:
            return hasher.verify(target, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await _bounded(settings, check)


@lru_cache(maxsize=4)
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    return _hasher(time_cost, memory_kib).hash("not-a-real-password-" + "x" * 16)
