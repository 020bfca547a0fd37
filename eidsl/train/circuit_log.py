"""The circuit monitor: every `circuit_every` training batches, one line of `circuit.jsonl` with
the firing rate of every population (E and I), silent fractions, and per E population the means
and spreads of I_EE, I_sub, I_div, I_int with its balance indices (eidsl/analyze.py).

It reads the tensors the training forward already kept, so the cost is a few reductions and one
W_EI product per layer on the monitored batches only (bench/analysis_overhead.py measures it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from eidsl.train import metrics
from eidsl.files import atomic_write as atomic_write_text

LOG = "circuit.jsonl"


class CircuitMonitor:
    def __init__(self, run: Path, every: int, enabled: bool = True):
        self.path = Path(run) / LOG
        self.every = every
        self.enabled = enabled and every > 0

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    @torch.no_grad()
    def record(self, net, env: dict[str, torch.Tensor], *, epoch: int, batch: int, step: int) -> dict[str, Any]:
        from eidsl.train.analyze import training_record
        rec = {"step": step, "epoch": epoch, "batch": batch, **training_record(net, env)}
        metrics.append(self.path, rec)
        return rec

    def truncate(self, step: int) -> None:
        """Drop records of steps at or after `step` (a resumed run logs them again)."""
        if self.path.exists():
            kept = [r for r in read_log(self.path.parent) if r.get("step", 0) < step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def read_log(run: Path) -> list[dict[str, Any]]:
    return metrics.read(Path(run) / LOG)
