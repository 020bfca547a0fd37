"""Start-up, measured as whole processes (issue 22): `import eidsl`, `eidsl eval RUN` on digits, and
process start -> end of the first training step, each run `--reps` times in fresh interpreters.

    python -m bench.startup [--reps 5] [--base ../perf-base] [--cold]

A digits run (E-I MLP, one hidden layer, 8x8 input, one epoch) is trained first, so eval has
a run to read and the kernel cache is warm. With --base, the same commands also run on another
checkout (eidsl before a change), alternating with this one so the machine's load falls on both.
With --cold, the first step is also timed once with an empty inductor cache (a fresh folder).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--set", "depth=2", "--set", "input=[1,8,8]", "--data", "digits", "--threads", "1", "--no-tensorboard"]
# The child reports the wall clock when its first optimiser step is done, then exits at once.
FIRST_STEP = """
import os, sys, time
from eidsl.train import trainer
step = trainer.Trainer._step
def first(self, *a, **k):
    step(self, *a, **k)
    print(f"FIRST_STEP {time.time()}", flush=True)
    os._exit(0)
trainer.Trainer._step = first
from eidsl.cli import main
sys.argv = ["eidsl", "train", sys.argv[1], *sys.argv[2:]]
main()
"""


def _env(tree: Path, **extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", **extra)


def wall(cmd: list[str], tree: Path, **env) -> float:
    cmd = [tempfile.mkdtemp(prefix="run-", dir=tempfile.gettempdir()) + "/out" if c == "OUT" else c for c in cmd]
    start = time.time()
    done = subprocess.run(cmd, cwd=tree, env=_env(tree, **env), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    for line in done.stdout.splitlines():
        if line.startswith("FIRST_STEP "):
            return float(line.split()[1]) - start
    return time.time() - start


def commands(tree: Path, run: Path) -> dict[str, tuple[list[str], dict]]:
    py = sys.executable
    spec = str(tree / "specs" / "mlp.ei")
    return {
        "import torch (the floor below eval)": ([py, "-c", "import torch"], {}),
        "import eidsl": ([py, "-c", "import eidsl"], {}),
        "eidsl eval RUN (digits)": ([py, "-m", "eidsl", "eval", str(run), "--threads", "1"], {}),
        "eidsl eval RUN, EIDSL_KERNELS=eager": ([py, "-m", "eidsl", "eval", str(run), "--threads", "1"],
                                               {"EIDSL_KERNELS": "eager"}),
        "start -> first training step": ([py, "-c", FIRST_STEP, spec, *TRAIN, "--epochs", "1", "--out", "OUT"], {}),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--base", type=Path, default=None, help="another checkout to time alongside")
    p.add_argument("--cold", action="store_true")
    a = p.parse_args(argv)
    trees = {"this": ROOT} | ({"base": a.base.resolve()} if a.base else {})
    tmp = Path(tempfile.mkdtemp(prefix="eidsl-startup-"))
    run = tmp / "run"
    subprocess.run([sys.executable, "-m", "eidsl", "train", str(ROOT / "specs" / "mlp.ei"), *TRAIN, "--epochs", "1",
                    "--out", str(run)], cwd=ROOT, env=_env(ROOT), check=True, capture_output=True)
    cmds = {name: commands(tree, run) for name, tree in trees.items()}
    for name, tree in trees.items():        # warm: bytecode, page cache, kernel cache
        for cmd, env in cmds[name].values():
            wall(cmd, tree, **env)
    times = {(t, k): [] for t in trees for k in cmds["this"]}
    for _ in range(a.reps):
        for key in cmds["this"]:
            for name, tree in trees.items():
                cmd, env = cmds[name][key]
                times[(name, key)].append(wall(cmd, tree, **env))
    print(f"{a.reps} runs each, seconds of wall time, min / median / max (shared 2-core machine)")
    for key in cmds["this"]:
        for name in trees:
            v = times[(name, key)]
            print(f"  {key:38} {name:5} {min(v):6.2f} / {statistics.median(v):6.2f} / {max(v):6.2f}")
    if a.cold:
        for name, tree in trees.items():
            cmd, env = cmds[name]["start -> first training step"]
            with tempfile.TemporaryDirectory() as cache:
                print(f"  cold cache: start -> first training step {name:5} "
                      f"{wall(cmd, tree, TORCHINDUCTOR_CACHE_DIR=cache, **env):6.2f}")


if __name__ == "__main__":
    main()
