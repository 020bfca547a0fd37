"""Peak training memory above weights and optimiser state, with and without static-input hoisting, each model
in a fresh process (bench/step_memory.py), `--reps` times: min / median / max in MB.

    python -m bench.memory_levers [--case vgg8] [--T 4] [--reps 3]
    python -m bench.memory_levers --over-T 1 2 4 8 16      (E-I and BN-SNN only, one process each)
"""
from __future__ import annotations

import argparse
import statistics

from .step_memory import peak_mb

KINDS = {"ei_unhoisted": "E-I, first layer on T copies (before issue 22)",
         "ei": "E-I, first layer hoisted (now)",
         "ei_plain": "E-I with plain autograd formulas (--before of bench)",
         "bn": "BN-SNN of the same shape"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.memory_levers", description=__doc__)
    p.add_argument("--case", default="vgg8")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--over-T", type=int, nargs="+", default=None, help="E-I and BN-SNN peak at each T")
    a = p.parse_args(argv)
    if a.over_T:
        print(f"{a.case}: peak step memory above weights and optimiser state, MB, by T")
        for T in a.over_T:
            r = {k: peak_mb(a.case, k, T=T, threads=a.threads) for k in ("ei", "bn")}
            if any("error" in v for v in r.values()):
                raise SystemExit(f"T={T}: {r}")
            ei, bn = r["ei"]["peak_mb"], r["bn"]["peak_mb"]
            print(f"  T={T:2d}  E-I {ei:7.1f}  BN-SNN {bn:7.1f}  E-I/BN {ei / bn:.2f}")
        return
    mb = {k: [] for k in KINDS}
    for _ in range(a.reps):
        for k in KINDS:
            r = peak_mb(a.case, k, T=a.T, threads=a.threads)
            if "error" in r:
                raise SystemExit(f"{k}: {r['error']}")
            mb[k].append(r["peak_mb"])
    bn = statistics.median(mb["bn"])
    print(f"{a.case}, T={a.T}: peak step memory above weights and optimiser state, MB, {a.reps} fresh processes each")
    for k, title in KINDS.items():
        v = mb[k]
        print(f"  {title:62} {min(v):7.1f} / {statistics.median(v):7.1f} / {max(v):7.1f}"
              f"   {statistics.median(v) / bn:5.2f}x BN-SNN")
    print(f"  E-I now / plain autograd: {statistics.median(mb['ei']) / statistics.median(mb['ei_plain']):.2f}")


if __name__ == "__main__":
    main()
