"""Every actor module the worker loads; importing one declares its actors on the broker."""

from __future__ import annotations

ACTOR_MODULES: tuple[str, ...] = ()
