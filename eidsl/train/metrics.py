"""Per-epoch numbers: running means during an epoch, and the run's `metrics.jsonl`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from eidsl.files import atomic_write, write_error


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
        # Each population's lowest and highest batch rate: "silent/saturated for a whole epoch"
        # (health.py) means every sampled batch was.
        self.rate_min: dict[str, float] = {}
        self.rate_max: dict[str, float] = {}
        self.lr = 0.0                 # the learning rate of the latest batch

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
            rates: dict[str, torch.Tensor] | None = None) -> None:
        n = y.shape[0]
        self.loss += float(loss.detach()) * n
        self.correct += int((logits.detach().argmax(1) == y).sum())
        self.seen += n
        if rates:
            values = torch.stack(list(rates.values())).tolist()   # one host sync for all of them
            for name, r in zip(rates, values):
                self.rates[name] = self.rates.get(name, 0.0) + r
                self.rate_min[name] = min(self.rate_min.get(name, r), r)
                self.rate_max[name] = max(self.rate_max.get(name, r), r)
            self.rate_batches += 1

    def total(self, sum_over_ranks: Callable[[torch.Tensor], torch.Tensor]) -> "EpochMeter":
        """These sums added over every training process (`sum_over_ranks`: an all-reduce sum).
        Every rank must hold the same rate names, which it does when all ran the same batches."""
        names = sorted(self.rates)
        local = torch.tensor([self.loss, self.correct, self.seen, self.rate_batches,
                              *(self.rates[k] for k in names)], dtype=torch.float64)
        t = sum_over_ranks(local).tolist()
        total = EpochMeter()
        total.loss, total.correct, total.seen, total.rate_batches = t[0], round(t[1]), round(t[2]), round(t[3])
        total.rates, total.lr = dict(zip(names, t[4:])), self.lr
        # The ranks' batch rates are of their shares; the extremes stay this rank's own.
        total.rate_min, total.rate_max = dict(self.rate_min), dict(self.rate_max)
        return total

    def merge(self, other: "EpochMeter") -> None:
        self.loss += other.loss
        self.correct += other.correct
        self.seen += other.seen
        for name, r in other.rates.items():
            self.rates[name] = self.rates.get(name, 0.0) + r
        for name, r in other.rate_min.items():
            self.rate_min[name] = min(self.rate_min.get(name, r), r)
        for name, r in other.rate_max.items():
            self.rate_max[name] = max(self.rate_max.get(name, r), r)
        self.rate_batches += other.rate_batches

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
        self.rate_min = dict(state.get("rate_min") or {})   # checkpoints written before these existed
        self.rate_max = dict(state.get("rate_max") or {})


def append(path: Path, record: dict[str, Any]) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as exc:   # a torn line is skipped by `read` and rewritten on resume
        raise write_error(path, exc) from None


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
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept))
