"""Per-epoch numbers: running means during an epoch, and the run's `metrics.jsonl`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


class EpochMeter:
    """Sums over the batches of one epoch: loss, correct predictions, firing rates.

    Its state is plain numbers, saved with a mid-epoch checkpoint.
    """

    def __init__(self) -> None:
        self.loss = 0.0
        self.correct = 0
        self.seen = 0
        self.rates: dict[str, float] = {}
        self.rate_batches = 0
        self.lr = 0.0                 # the learning rate of the latest batch

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
            rates: dict[str, torch.Tensor] | None = None) -> None:
        n = y.shape[0]
        self.loss += float(loss.detach()) * n
        self.correct += int((logits.detach().argmax(1) == y).sum())
        self.seen += n
        if rates:
            for name, r in rates.items():
                self.rates[name] = self.rates.get(name, 0.0) + float(r)
            self.rate_batches += 1

    @property
    def mean_loss(self) -> float:
        return self.loss / max(self.seen, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.seen, 1)

    def mean_rates(self) -> dict[str, float]:
        return {k: v / max(self.rate_batches, 1) for k, v in self.rates.items()}

    def mean_rate(self) -> float | None:
        rates = self.mean_rates()
        return sum(rates.values()) / len(rates) if rates else None

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


def append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read(path: Path) -> list[dict[str, Any]]:
    """Records of `metrics.jsonl`; a torn last line (a kill mid-write) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate(path: Path, epochs: int) -> None:
    """Keep the records of the first `epochs` epochs (a resumed run rewrites what came after)."""
    kept = [r for r in read(path) if r.get("epoch", 0) <= epochs]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
