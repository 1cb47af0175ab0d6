"""Every actor module the worker loads; importing one declares its actors on the broker."""

from __future__ import annotations

import importlib

# Feature `tasks` modules, e.g. "socialflow.media.tasks", as features arrive.
ACTOR_MODULES: tuple[str, ...] = ("socialflow.members.tasks",)

for _module in ACTOR_MODULES:
    importlib.import_module(_module)
