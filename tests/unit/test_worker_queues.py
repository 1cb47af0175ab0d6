"""`socialflow worker --queues / --exclude-queues`: which queues a worker consumes."""

from __future__ import annotations

import click
import pytest

from socialflow.cli import worker_queues
from socialflow.event_routing import EVENT_ROUTES


def _routed() -> set[str]:
    return {route.queue for routes in EVENT_ROUTES.values() for route in routes}


def test_by_default_a_worker_consumes_every_routed_queue_including_ai() -> None:
    assert set(worker_queues([], [])) == _routed()
    assert "ai" in _routed()


def test_excluding_ai_leaves_every_other_queue_so_none_goes_unconsumed() -> None:
    general = worker_queues([], ["ai"])
    ai_only = worker_queues(["ai"], [])
    assert ai_only == ["ai"]
    assert set(general) | set(ai_only) == _routed()
    assert "ai" not in general


@pytest.mark.parametrize(("queues", "excluded"), [(["aii"], []), ([], ["nope"]), (["ai"], ["ai"])])
def test_an_unknown_queue_or_nothing_left_is_refused(
    queues: list[str], excluded: list[str]
) -> None:
    with pytest.raises(click.BadParameter):
        worker_queues(queues, excluded)
