"""The step gate: at most its slots at once; later steps of deliveries under way before first
steps of new ones; a waiter cancelled never leaks a slot."""

from __future__ import annotations

import asyncio

import pytest

from socialflow.workers.step_gate import FIRST, LATER, StepGate


async def test_no_more_than_its_slots_hold_it_at_once() -> None:
    gate = StepGate(2)
    holding = peak = 0

    async def step() -> None:
        nonlocal holding, peak
        async with gate.slot(FIRST):
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.01)
            holding -= 1

    await asyncio.gather(*(step() for _ in range(10)))
    assert peak == 2
    assert gate.busy == 0


async def test_a_later_step_is_admitted_before_first_steps_that_waited_longer() -> None:
    gate = StepGate(1)
    order: list[str] = []
    release = asyncio.Event()

    async def step(name: str, priority: int) -> None:
        async with gate.slot(priority):
            order.append(name)
            if name == "holder":
                await release.wait()

    holder = asyncio.create_task(step("holder", FIRST))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(step(f"new-{i}", FIRST)) for i in range(3)]
    await asyncio.sleep(0)
    waiting.append(asyncio.create_task(step("finishing", LATER)))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, *waiting)
    assert order == ["holder", "finishing", "new-0", "new-1", "new-2"]


async def test_a_cancelled_waiter_leaves_no_slot_taken() -> None:
    gate = StepGate(1)
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot(FIRST):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.busy == 0
    async with gate.slot(FIRST):  # and the gate still admits
        assert gate.busy == 1
    assert gate.busy == 0


async def test_a_waiter_cancelled_after_its_turn_came_hands_the_slot_on() -> None:
    gate = StepGate(1)
    release = asyncio.Event()
    admitted: list[str] = []

    async def hold(name: str) -> None:
        async with gate.slot(FIRST):
            admitted.append(name)
            await release.wait()

    holder = asyncio.create_task(hold("holder"))
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(hold("cancelled"))
    after = asyncio.create_task(hold("after"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.sleep(0)  # the holder leaves: "cancelled" is admitted but has not run yet
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await asyncio.wait_for(asyncio.gather(holder, after), 5)  # never admitted: a leaked slot
    assert admitted == ["holder", "after"]
    assert gate.busy == 0


async def test_a_backfills_next_batch_queues_as_new_work_behind_deliveries_waiting_before_it() -> (
    None
):
    from socialflow.settings import Settings
    from socialflow.workers.actors import EventSteps, WorkerResources
    from socialflow.workers.step_gate import step_gate

    WorkerResources.configure(Settings(_env_file=None, worker_step_concurrency=1))  # type: ignore[call-arg]
    try:
        gate = step_gate(1)
        backfill = EventSteps(None, None, "reembed_media")  # type: ignore[arg-type]
        async with backfill.stage():  # its first batch: under way since
            pass
        order: list[str] = []
        release = asyncio.Event()

        async def holder() -> None:
            async with gate.slot(FIRST):
                await release.wait()

        async def stage(name: str, steps: EventSteps) -> None:
            async with steps.stage():
                order.append(name)

        held = asyncio.create_task(holder())
        await asyncio.sleep(0)
        new = asyncio.create_task(stage("new delivery", EventSteps(None, None, "caption_media")))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        backfill.anew()
        batch = asyncio.create_task(stage("next batch", backfill))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(held, new, batch)
        assert order == ["new delivery", "next batch"]  # without anew(): the batch first
    finally:
        WorkerResources._settings = None
