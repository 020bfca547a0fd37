"""Grids of training runs: every combination of some spec parameters, one run directory each.

A cell is named by its values and a key: the hash of everything that decides its result
(the text of the spec and of every file it imports, the --set values, the training options,
the eidsl version and a hash of its code). A finished cell (`result.json` holding the same key) is never rerun, so
an interrupted sweep continues where it stopped; changing any input gives new cells, never
the old results. Each grid writes its own table, `results-GRIDKEY.{md,json}`. Each cell trains
in its own process (`eidsl train`), so a cell that fails or diverges is recorded and the
sweep goes on.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from eidsl.errors import EidslError


@dataclass(frozen=True)
class Cell:
    sets: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.sets) or "default"

    def as_dict(self) -> dict[str, str]:
        return dict(self.sets)

    def values(self) -> dict:
        """The cell's values as JSON values: `2` a number, `[1,8,8]` a list, `ei` a string."""
        return {k: json_value(v) for k, v in self.sets}


def json_value(text: str):
    """A grid value (spec text) as the JSON value it reads as, else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, bool, list)) else text


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """`--grid 'depth=2,4,8'` -> [("depth", ["2", "4", "8"])]. Lists in brackets stay whole: input=[1,8,8]."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or not values.strip():
            raise EidslError(f"--grid takes NAME=V1,V2,..., got {item!r}")
        axes.append((key, _split_values(values)))
    names = [k for k, _ in axes]
    if len(set(names)) != len(names):
        raise EidslError(f"--grid names a parameter twice: {', '.join(names)}")
    return axes


def _split_values(text: str) -> list[str]:
    values, depth, current = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return [v for v in values if v]


def cells(axes: list[tuple[str, list[str]]]) -> list[Cell]:
    keys = [k for k, _ in axes]
    return [Cell(tuple(zip(keys, combo))) for combo in itertools.product(*(v for _, v in axes))]


@dataclass
class Sweep:
    spec: Path
    axes: list[tuple[str, list[str]]]
    out: Path
    sets: dict[str, str] = field(default_factory=dict)
    train_args: list[str] = field(default_factory=list)
    force: bool = False                 # rerun every cell, finished or not
    run_args: list[str] = field(default_factory=list)   # passed to `eidsl train` but not part of any key

    def inputs(self) -> dict:
        """What every cell's result depends on, besides the cell's own values."""
        from eidsl import __version__
        from eidsl.train.sources import code_fingerprint, spec_sources
        return {"spec": spec_sources(self.spec), "sets": self.sets, "train": self.train_args,
                "eidsl": __version__, "code": code_fingerprint()}

    def cell_key(self, cell: Cell, inputs: dict | None = None) -> str:
        from eidsl.train.sources import fingerprint
        return fingerprint(inputs or self.inputs(), cell.as_dict())

    def grid_key(self, inputs: dict | None = None) -> str:
        from eidsl.train.sources import fingerprint
        return fingerprint(inputs or self.inputs(), self.axes)[:8]

    def table_paths(self, inputs: dict | None = None) -> tuple[Path, Path]:
        key = self.grid_key(inputs)
        return self.out / f"results-{key}.md", self.out / f"results-{key}.json"

    def run(self, echo=print) -> list[dict]:
        self.out.mkdir(parents=True, exist_ok=True)
        inputs = self.inputs()      # read once: a spec edited during the sweep does not mix into its keys
        results = []
        todo = cells(self.axes)
        for i, cell in enumerate(todo, 1):
            key = self.cell_key(cell, inputs)
            cell_dir = self.out / f"{cell.name}-{key[:8]}"
            done = cell_dir / "result.json"
            previous = json.loads(done.read_text()) if done.exists() else None
            if previous is not None and previous.get("key") == key and not self.force:
                result = previous
                echo(f"[{i}/{len(todo)}] {cell.name}: done before, same inputs ({_fmt_acc(result)})")
            else:
                if self.force and cell_dir.exists():
                    shutil.rmtree(cell_dir)
                echo(f"[{i}/{len(todo)}] {cell.name}: training ...")
                result = self.run_cell(cell, cell_dir, key)
                echo(f"[{i}/{len(todo)}] {cell.name}: {result['status']} ({_fmt_acc(result)}, "
                     f"{result['seconds']:.0f} s)")
            results.append(result)
            self.write_tables(results, inputs)
        return results

    def run_cell(self, cell: Cell, cell_dir: Path, key: str | None = None) -> dict:
        sets = {**self.sets, **cell.as_dict()}
        cmd = [sys.executable, "-m", "eidsl.cli", "train", str(self.spec), "--out", str(cell_dir)]
        if (cell_dir / "checkpoints").exists():
            # Interrupted with the same inputs (the folder name carries their key): continue it.
            cmd = [sys.executable, "-m", "eidsl.cli", "train", "--resume", str(cell_dir)]
        else:
            for k, v in sets.items():
                cmd += ["--set", f"{k}={v}"]
            cmd += self.train_args
        cmd += self.run_args
        start = time.time()
        cell_dir.mkdir(parents=True, exist_ok=True)
        with open(cell_dir / "log.txt", "a") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"})
        seconds = time.time() - start
        result = summarize_run(cell_dir)
        result.update({"cell": cell.values(), "name": cell.name, "key": key or self.cell_key(cell),
                       "folder": cell_dir.name, "seconds": seconds,
                       "status": "ok" if proc.returncode == 0 else _failure(cell_dir, proc.returncode)})
        if proc.returncode in (0, 2, 4):
            # Finished, refused, or diverged: a rerun would do the same. Interrupted runs are retried.
            (cell_dir / "result.json").write_text(json.dumps(result, indent=1))
        return result

    def write_tables(self, results: list[dict], inputs: dict | None = None) -> None:
        md, js = self.table_paths(inputs)
        keys = [k for k, _ in self.axes]
        js.write_text(json.dumps({"spec": str(self.spec), "grid": {k: [json_value(v) for v in vs] for k, vs in self.axes},
                                  "sets": self.sets, "train": self.train_args, "grid_key": md.stem[len("results-"):],
                                  "cells": results}, indent=1))
        md.write_text(f"{self.spec} " + " ".join(f"--grid {k}={','.join(vs)}" for k, vs in self.axes)
                      + "".join(f" --set {k}={v}" for k, v in self.sets.items())
                      + (" " + " ".join(self.train_args) if self.train_args else "") + "\n\n"
                      + markdown_table(results, keys))


def _failure(cell_dir: Path, code: int) -> str:
    log = (cell_dir / "log.txt").read_text(errors="replace") if (cell_dir / "log.txt").exists() else ""
    if "non-finite" in log:
        return "diverged"
    return f"failed (exit {code})"


def summarize_run(run_dir: Path) -> dict:
    """Best and final test accuracy, final firing rate and parameters from a run directory."""
    metrics = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        metrics = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    accs = [_get(m, "test_acc", "test_accuracy") for m in metrics]
    accs = [a for a in accs if a is not None]
    best = max(accs) if accs else None
    result = {
        "epochs": len(metrics),
        "best_acc": best,
        "best_epoch": (accs.index(best) + 1) if accs else None,
        "final_acc": accs[-1] if accs else None,
        "train_loss": _get(metrics[-1], "train_loss") if metrics else None,
        "firing_rate": _mean_rate(metrics[-1]) if metrics else None,
        "step_seconds": _get(metrics[-1], "step_seconds") if metrics else None,
    }
    config = run_dir / "config.json"
    if config.exists():
        result["parameters"] = json.loads(config.read_text()).get("parameters")
    return result


def _get(m: dict, *keys):
    for k in keys:
        if k in m:
            return m[k]
    return None


def _mean_rate(m: dict):
    rates = m.get("firing_rates") or {}
    return sum(rates.values()) / len(rates) if rates else _get(m, "firing_rate", "mean_firing_rate")


def _fmt_acc(r: dict) -> str:
    return "no accuracy" if r.get("best_acc") is None else f"best {100 * r['best_acc']:.1f}%"


def markdown_table(results: list[dict], keys: list[str]) -> str:
    head = keys + ["status", "best acc %", "final acc %", "best epoch", "firing rate", "params", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [str(r["cell"].get(k, "")) for k in keys] + [
            r["status"], _pct(r.get("best_acc")), _pct(r.get("final_acc")), str(r.get("best_epoch") or ""),
            "" if r.get("firing_rate") is None else f"{r['firing_rate']:.3f}",
            "" if not r.get("parameters") else f"{r['parameters']:,}", f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}"
