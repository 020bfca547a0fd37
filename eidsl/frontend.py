"""Spec text to a checked graph, without the compiler: `eidsl check` and `describe` answer
without importing PyTorch (seconds on a busy machine, more than most specs take to check)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import ir
from .elaborate import Value, elaborate
from .passes import check


def load_graph(spec: str | Path, sets: dict[str, str] | None = None, include=(), network: str | None = None, *,
               batch: int = 1, memory_limit: float | None = None, **params: Any) -> ir.Graph:
    """Parse, elaborate and check a spec. `sets` are command-line texts, `params` Python values.
    A network whose training step at `batch` needs more than `memory_limit` bytes (None: the memory
    available now, math.inf: no limit) is refused with the estimate."""
    overrides: dict[str, Any] = dict(sets or {})
    overrides.update({k: Value(v) for k, v in params.items()})
    return check(elaborate(spec, overrides, include, network), batch, memory_limit)
