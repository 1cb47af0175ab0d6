"""A bound on the step transactions a worker's event loop runs at once, later steps first.

A worker process of stepwise actors (the AI calls) keeps many deliveries in flight, each
mostly waiting on a provider. Their database steps all run on the process's one event loop:
unbounded, a burst of new deliveries' first steps fills the loop's ready queue, and every
statement of a delivery that already made its call waits behind them, so a call finishes
hundreds of milliseconds after its answer came. The gate admits `slots` step transactions at
once and, among those waiting, a delivery's later step before another delivery's first: work
already paid for (a reserved budget, a provider's answer) finishes first, new work starts as
the loop has room. It also bounds the pooled connections the steps hold.

Hand-written: asyncio has no priority semaphore.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

FIRST = 1  # a delivery's first step: new work
LATER = 0  # its later steps: work under way, admitted first


class StepGate:
    """At most `slots` holders at once; waiters admitted by priority (lower first), then in
    arrival order."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a gate needs a slot")
        self.slots = slots
        self.busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        if self.busy < self.slots and not self._waiting:
            self.busy += 1
        else:
            entry = (priority, next(self._arrivals), asyncio.get_running_loop().create_future())
            heapq.heappush(self._waiting, entry)
            try:
                await entry[2]
            except asyncio.CancelledError:
                if not entry[2].cancelled():
                    self._release()  # admitted as it was cancelled: hand the slot on
                elif entry in self._waiting:  # leave the queue (rare: O(n))
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, admitted = heapq.heappop(self._waiting)
            if not admitted.done():  # not cancelled before its task could leave the queue
                admitted.set_result(None)  # the slot passes on: `busy` is unchanged
                return
        self.busy -= 1


_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StepGate] = weakref.WeakKeyDictionary()


def step_gate(slots: int) -> StepGate:
    """The running loop's gate (one per loop: a worker's, or a test's)."""
    loop = asyncio.get_running_loop()
    gate = _GATES.get(loop)
    if gate is None or gate.slots != slots:
        gate = _GATES[loop] = StepGate(slots)
    return gate
