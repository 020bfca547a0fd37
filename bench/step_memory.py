"""Peak training memory of one step, measured in a fresh subprocess per model.

CPU: the peak resident set (VmHWM) is reset through /proc/self/clear_refs just before the
step; the step's peak is VmHWM minus the resident set before it (model, optimiser state and
one warm-up step's allocator pools already in place). glibc's mmap threshold is pinned so
large tensors are mapped and unmapped as they live and die, making RSS follow live tensors.
CUDA: torch.cuda.max_memory_allocated over the step, minus what was allocated before it.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(case_key: str, kind: str, device: str, T: int, amp: str | None, channels_last: bool,
            threads: int) -> dict:
    import torch

    from .cases import CASES, Setup, batch_for, build, train_step
    torch.set_num_threads(threads)
    setup = Setup(device=device, amp=amp, channels_last=channels_last, T=T)
    case = CASES[case_key]
    x, y = batch_for(case, setup)
    model, opt = build(case, kind, setup, x)
    step = train_step(model, opt, x, y, setup, plain=kind == "ei_plain", hoist=kind != "ei_unhoisted")
    step()                                   # optimiser state and allocator warm
    opt.zero_grad(set_to_none=True)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        peak = torch.cuda.max_memory_allocated() - before
        return {"peak_mb": peak / 2**20, "method": "cuda.max_memory_allocated"}
    before = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    step()
    return {"peak_mb": (_rss_kb("VmHWM") - before) / 1024, "method": "VmHWM delta"}


def peak_mb(case_key: str, kind: str, device: str = "cpu", T: int = 4, amp: str | None = None,
            channels_last: bool = False, threads: int = 2, timeout: float = 600) -> dict:
    """Run `measure` in a fresh interpreter; returns {"peak_mb": ...} or {"error": ...}."""
    args = [sys.executable, "-m", "bench.step_memory", case_key, kind, "--device", device, "--T", str(T),
            "--threads", str(threads)]
    if amp:
        args += ["--amp", amp]
    if channels_last:
        args.append("--channels-last")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"unreadable output: {done.stdout[-200:]!r}"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("case")
    p.add_argument("kind")
    p.add_argument("--device", default="cpu")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--amp", default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    print(json.dumps(measure(a.case, a.kind, a.device, a.T, a.amp, a.channels_last, a.threads)))


if __name__ == "__main__":
    main()
