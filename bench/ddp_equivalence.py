"""How close N-process training (torchrun, DDP, gloo on CPU) stays to one process on the same
global batches: the numbers behind tests/train/test_distributed.py, printed instead of asserted.

    python3 bench/ddp_equivalence.py [--nproc 2] [--k 3]

Trains the tiny E-I MLP on digits (tests/ddp_worker.py: batch 125, 2 epochs) once in one
process and once under `torchrun --standalone --nproc-per-node N`, and prints, after E-I
Init, after K updates and at the end, whether the ranks are identical and the largest
difference from the single process relative to each tensor's largest value, plus the test
accuracies and the wall times (start-up included; other processes on the cores inflate them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"


def relative(a: dict, b: dict) -> float:
    def one(x, y):
        scale = float(y.abs().max())
        return float((x - y).abs().max()) / (scale or 1.0)
    return max(one(a[k], b[k]) for k in a)


def weights(run: Path) -> dict:
    return {k: v for k, v in load_file(str(run / "checkpoints" / "last.safetensors")).items()
            if not k.startswith("train_state/")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        one.mkdir(), many.mkdir()
        timings = {}
        for label, out, cmd in [
            ("1 process", one, [sys.executable, str(WORKER)]),
            (f"{args.nproc} processes", many, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                               f"--nproc-per-node={args.nproc}", str(WORKER)]),
        ]:
            started = time.perf_counter()
            subprocess.run([*cmd, str(out), str(args.k), "-1", "-1"], cwd=out, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            timings[label] = time.perf_counter() - started
        n = args.nproc
        for stage in ("init", "step"):
            ranks = [torch.load(many / f"{stage}-{n}-{r}.pt") for r in range(n)]
            same = all(torch.equal(ranks[0][k], other[k]) for other in ranks[1:] for k in ranks[0])
            what = "after E-I Init" if stage == "init" else f"after {args.k} updates"
            single = torch.load(one / f"{stage}-1-0.pt")
            print(f"{what:>18}: ranks identical {same}; vs 1 process {relative(ranks[0], single):.2e}")
        print(f"{'after 2 epochs':>18}: vs 1 process {relative(weights(many / 'run-0'), weights(one / 'run-0')):.2e}")
        for label, out in (("1 process", one), (f"{n} processes", many)):
            lines = (out / "run-0" / "metrics.jsonl").read_text().splitlines()
            acc = [json.loads(line)["test_accuracy"] for line in lines]
            print(f"{label:>18}: test accuracy per epoch {acc}, wall {timings[label]:.1f} s")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
