"""No module imports upward: each part of `socialflow` imports only parts on lower layers.

The layers are the folder table of docs/architecture.md; a feature added at the top of the
table (media, publishing …) imports what is below it, and nothing below imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "socialflow"

# Lowest first. A part may import parts of lower layers only.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer.split())
    for layer in (
        "settings embedded",
        "lib",
        "db",
        "outbox vault health",
        "access",
        "resources",
        "audit workers",
        "plans",
        "identity",
        "members",
        "tenancy",
        "ai",
        "media",
        "captions",
        "search",
        "social",
        "publishing",
        "webhooks",
        "event_routing tables devserver api_server",
        "app cli",
        "__main__",
    )
)


def _part(path: Path) -> str:
    relative = path.relative_to(ROOT).parts
    return relative[0] if len(relative) > 1 else relative[0].removesuffix(".py")


def _layer(part: str) -> int:
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise AssertionError(f"socialflow.{part} is on no layer: add it to LAYERS")


def _imported_parts(path: Path) -> set[str]:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        parts |= {n.split(".")[1] for n in names if n.startswith("socialflow.")}
    return parts


def test_no_module_imports_a_part_on_its_own_layer_or_above() -> None:
    upward = sorted(
        f"{path.relative_to(ROOT)} imports socialflow.{target}"
        for path in ROOT.rglob("*.py")
        for target in _imported_parts(path) - {_part(path)}
        if _layer(target) >= _layer(_part(path))
    )
    assert upward == []


def test_every_part_is_on_a_layer() -> None:
    parts = {_part(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    for part in parts:
        _layer(part)
