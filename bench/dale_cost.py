"""What Dale's law enforcement (compiler/dale.py) costs per training step: the same step with the
guards on and off, interleaved, on E-I MLP-4 (28x28, batch 64, T = 4).

    python3 bench/dale_cost.py [--reps 30] [--threads 1]

A: torch.optim.Adam, guards on (post-step projection + forward check); B: the same, guards off.
C: eidsl.optimizer (SignConstrainedSGD, projects by itself), guards on; D: guards off.
Prints min / median / max milliseconds per step and the ratios of the medians, then the guards
timed alone (microseconds per call).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import eidsl  # noqa: E402
from eidsl_compiler import dale  # noqa: E402


@contextmanager
def guards_off():
    hook, check = dale._hook, dale.Guard.check
    hook.remove()
    dale.Guard.check = lambda self: None
    try:
        yield
    finally:
        dale.Guard.check = check
        dale._hook = None
        net = next(iter(dale._networks))
        dale.track(net)   # reinstalls the hook
        # An unguarded Adam step leaves negative weights: project them, untimed, before a guarded step.
        net.clamp_()
        net.dale_guard.check()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = eidsl.build(ROOT / "specs" / "mlp.ei", depth=4, paper=True)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    eidsl.ei_init(net, x)
    optimisers = {"adam": torch.optim.Adam(net.parameters(), lr=1e-4),
                  "eidsl": eidsl.optimizer(net, lr=1e-3)}

    def step(opt) -> float:
        started = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        return time.perf_counter() - started

    times: dict[str, list[float]] = {k: [] for k in ("A", "B", "C", "D")}
    for opt in optimisers.values():   # warm-up: allocator, optimiser state
        for _ in range(3):
            step(opt)
            with guards_off():
                step(opt)
    for _ in range(args.reps):
        times["A"].append(step(optimisers["adam"]))
        with guards_off():
            times["B"].append(step(optimisers["adam"]))
        times["C"].append(step(optimisers["eidsl"]))
        with guards_off():
            times["D"].append(step(optimisers["eidsl"]))
    names = {"A": "Adam, guards on", "B": "Adam, guards off", "C": "eidsl.optimizer, guards on",
             "D": "eidsl.optimizer, guards off"}
    med = {}
    for key, values in times.items():
        ms = [1e3 * v for v in values]
        med[key] = statistics.median(ms)
        print(f"{key} {names[key]:<30} min {min(ms):7.2f}  median {med[key]:7.2f}  max {max(ms):7.2f} ms")
    print(f"median ratio A/B {med['A'] / med['B']:.3f}   C/D {med['C'] / med['D']:.3f}")
    # The guards alone, without the step around them (the step's noise on a busy machine hides them).
    parts = {"post-step projection after Adam (clamp + versions)": lambda: dale._project_after_step(
                 optimisers["adam"], (), {}),
             "post-step hook after eidsl.optimizer (versions only)": lambda: dale._project_after_step(
                 optimisers["eidsl"], (), {}),
             "forward check, nothing changed": net.dale_guard.check}
    for label, fn in parts.items():
        us = []
        for _ in range(200):
            started = time.perf_counter()
            fn()
            us.append(1e6 * (time.perf_counter() - started))
        print(f"{label:<55} min {min(us):7.1f}  median {statistics.median(us):7.1f}  max {max(us):8.1f} us")
    negatives = sum(int((p < 0).sum()) for n, p in net.named_parameters() if net.param_specs[n].nonneg)
    print(f"negative sign-constrained entries after {4 * args.reps + 12} steps: {negatives}")
    try:
        import os
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, {args.threads} torch thread(s)")
    except OSError:
        pass


if __name__ == "__main__":
    main()
