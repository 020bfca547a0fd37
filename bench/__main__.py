"""python -m bench [--quick] [--json OUT] [--device cuda] [--amp bf16] ..."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from eidsl_compiler.allocator import keep_freed_memory

# Scaling: T grows at batch "T_batch"; the batch grows at T = 4.
QUICK = {"cases": ["vgg8", "mlp8"], "reps": 3, "compile": [], "memory": ["vgg8"], "scaling": "mlp8",
         "Ts": [1, 2, 4, 8, 16], "T_batch": 8, "batches": [16, 32, 64, 128], "scaling_reps": 2}
FULL = {"cases": ["vgg8", "resnet18", "mlp8"], "reps": 7, "compile": ["vgg8", "mlp8"],
        "memory": ["vgg8", "resnet18", "mlp8"], "scaling": "vgg8", "Ts": [1, 2, 4, 8, 16], "T_batch": 8,
        "batches": [4, 8, 16, 32], "scaling_reps": 3}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="under 3 minutes: VGG-8 and MLP-8, no compile, fewer reps")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--amp", choices=["bf16"], default=None, help="bf16 autocast for every model")
    p.add_argument("--channels-last", action="store_true", help="channels-last inputs and conv weights")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--cases", nargs="+", default=None, help="subset of vgg8 resnet18 mlp8")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per model")
    p.add_argument("--compile", nargs="*", default=None, help="cases to also time under torch.compile")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--no-lif", action="store_true", help="skip the LIF implementation comparison")
    p.add_argument("--before", action="store_true",
                   help="also time E-I with the plain autograd formulas (eidsl before issue 5)")
    p.add_argument("--cold-compile", action="store_true", help="disable inductor's caches: time a cold compile")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    import torch

    from .cases import CASES, Setup
    from .report import show, targets
    from .run import check_amp, meta, run_case, run_scaling
    plan = dict(QUICK if args.quick else FULL)
    for key in ("cases", "reps", "compile"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    args.reps = plan["reps"]
    unknown = [c for c in plan["cases"] + plan["compile"] if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    keep_freed_memory()                 # as `eidsl train` does; the same for every model timed
    setup = Setup(device=args.device, amp=args.amp, channels_last=args.channels_last)
    console = Console(stderr=True)
    log = lambda msg: console.print(msg, highlight=False, markup=False)  # noqa: E731
    start = time.perf_counter()
    results: dict = {"meta": meta(setup, args), "cases": {}}
    for key in plan["cases"]:
        log(f"case {key}")
        results["cases"][key] = run_case(key, setup, plan["reps"], key in plan["compile"],
                                         key in plan["memory"] and not args.no_memory, args.before,
                                         args.cold_compile, log)
    if not args.no_scaling:
        results["scaling"] = run_scaling(plan["scaling"], setup, plan["Ts"], plan["T_batch"], plan["batches"],
                                         plan["scaling_reps"], log)
    if not args.no_lif:
        from .lif_variants import compare
        results["lif"] = compare(args.device, compile=not args.quick, log=log)
    if args.amp or not args.quick:
        results["amp"] = check_amp("vgg8", setup)
    results["targets"] = targets(results)
    results["meta"]["wall_s"] = time.perf_counter() - start
    show(results, Console(width=200))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
        log(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
