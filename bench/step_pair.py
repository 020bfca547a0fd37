"""E-I training step time of this checkout against another one (eidsl before a change), alternating
fresh processes so the machine's load falls on both; one thread.

    python -m bench.step_pair --base ../perf-base [--cases vgg8 mlp8] [--pairs 3] [--steps 6]

Each process builds the case, runs two warm-up steps and times `--steps` more. Prints min / median /
max of all steps per checkout, and the per-pair ratio of median step times (this / base).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The child loads eidsl and eidsl_compiler from the checkout it is given (the editable install maps
# eidsl_compiler to this checkout's compiler/ otherwise), then times the step.
CHILD = """
import importlib.util, json, sys, time
tree, case, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, tree)
spec = importlib.util.spec_from_file_location("eidsl_compiler", f"{tree}/compiler/__init__.py",
                                              submodule_search_locations=[f"{tree}/compiler"])
module = importlib.util.module_from_spec(spec)
sys.modules["eidsl_compiler"] = module
spec.loader.exec_module(module)
import torch
torch.set_num_threads(1)
from bench.cases import CASES, Setup, batch_for, build, train_step
import eidsl_compiler.fused
assert eidsl_compiler.fused.__file__.startswith(tree), eidsl_compiler.fused.__file__
setup = Setup(device="cpu", amp=None, channels_last=False, T=4)
c = CASES[case]
x, y = batch_for(c, setup)
model, opt = build(c, "ei", setup, x)
step = train_step(model, opt, x, y, setup, plain=False, hoist=True)
step(); step()
times = []
for _ in range(steps):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def _steps(tree: Path, case: str, steps: int) -> list[float]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), case, str(steps)], cwd=tree,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree} {case} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.step_pair", description=__doc__)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--cases", nargs="+", default=["vgg8", "mlp8"])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args(argv)
    trees = {"base": a.base.resolve(), "this": ROOT}
    for case in a.cases:
        runs = {name: [] for name in trees}
        for i in range(a.pairs):
            for name in (("base", "this") if i % 2 == 0 else ("this", "base")):
                runs[name].append(_steps(trees[name], case, a.steps))
        for name, samples in runs.items():
            every = [t for run in samples for t in run]
            print(f"{case} {name}: step ms {1e3 * min(every):.1f} / {1e3 * statistics.median(every):.1f} / "
                  f"{1e3 * max(every):.1f}")
        ratios = [statistics.median(t) / statistics.median(b) for t, b in zip(runs["this"], runs["base"])]
        print(f"{case} this/base per pair: " + " ".join(f"{r:.3f}" for r in ratios))


if __name__ == "__main__":
    main()
