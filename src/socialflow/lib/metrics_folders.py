"""Folders for multiprocess metrics (PROMETHEUS_MULTIPROC_DIR) of the commands that run several
processes (`socialflow api --workers N`, `socialflow worker`).

Standard library only, on purpose: a command makes its folder before its processes start, and
prometheus_client chooses how it stores values when first imported (files only if the variable
is set by then). Importing it earlier in the command would leave its processes counting in
memory, each alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def metrics_folder(kind: str) -> str:
    """A fresh folder for the multiprocess metrics of a command of `kind` (api, worker), named
    by its pid. A command's folder goes when it stops; one killed (SIGKILL) cannot remove
    its own, so the folders of commands no longer running are removed here first."""
    prefix = f"socialflow-{kind}-metrics-"
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        owner = old.name.removeprefix(prefix).split("-", 1)[0]
        if owner.isdigit() and not _running(int(owner)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: running
        return True
    return True
