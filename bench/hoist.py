"""Static-input hoisting (issue 22): the E-I training step with the first projection computed once
per sample (`ei`) and T times (`ei_unhoisted`, eidsl before), and the dense floor, side by side.

    python -m bench.hoist [--reps 7] [--threads 2] [--cases mlp8 vgg8] [--memory]

One model, its step timed with hoisting on and off in interleaved repetitions (bench/timing.py);
ratios are paired per repetition. With --memory, the peak training memory above weights and
optimiser state of each variant, each in a fresh process (bench/step_memory.py).
"""
from __future__ import annotations

import argparse
import statistics

import torch


def first_layer_share(case_key: str, T: int) -> float:
    """Multiply-adds of the projections reading the image, as a share of all projections' (per step)."""
    from .cases import CASES, SPECS
    import eidsl
    case = CASES[case_key]
    net = eidsl.build(SPECS / case.spec, T=T, classes=case.classes, input=list(case.input), **case.params)
    macs, first = {}, 0.0
    x = torch.rand(1, *case.input)

    def count(step, env):
        nonlocal first
        if step.op == "project":
            src = env[step.ins[0]]
            n = sum(_macs(src, net.tensor(w), step.attrs) for w in step.params.weights)
            macs[step.outs[0]] = n
            if step.ins[0] in net.static_input:
                first += n
    net.run(x, hook=count)
    return first / sum(macs.values())


def _macs(x, w, attrs) -> float:
    if attrs.op == "dense":
        return w.numel() * x.shape[0]
    h = (x.shape[2] + 2 * attrs.padding - w.shape[2]) // attrs.stride + 1
    wd = (x.shape[3] + 2 * attrs.padding - w.shape[3]) // attrs.stride + 1
    return w.numel() * h * wd * x.shape[0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.hoist", description=__doc__)
    p.add_argument("--cases", nargs="+", default=["mlp8", "vgg8"])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--memory", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from .cases import CASES, Setup, batch_for, build, train_step
    from .step_memory import peak_mb
    from .timing import interleaved
    setup = Setup(T=a.T)
    fmt = lambda xs: f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}"   # noqa: E731
    print(f"torch {torch.__version__}, {a.threads} threads, T={a.T}, {a.reps} repetitions (min / median / max)")
    for key in a.cases:
        case = CASES[key]
        x, y = batch_for(case, setup)
        net, opt = build(case, "ei", setup, x)
        floor, fopt = build(case, "floor", setup, x)
        steps = {"ei": train_step(net, opt, x, y, setup),
                 "ei_unhoisted": train_step(net, opt, x, y, setup, hoist=False),
                 "floor": train_step(floor, fopt, x, y, setup)}
        times = interleaved(steps, a.reps)
        ms = {k: [1e3 * t for t in v] for k, v in times.items()}
        print(f"\n{case.title}, batch {case.batch}: first projection = "
              f"{100 * first_layer_share(key, a.T):.1f} % of the projections' multiply-adds")
        for k, v in ms.items():
            print(f"  {k:13} step ms {fmt(v)}")
        for num, den in (("ei", "ei_unhoisted"), ("ei", "floor"), ("ei_unhoisted", "floor")):
            print(f"  {num}/{den}: {fmt([n / d for n, d in zip(times[num], times[den])])}")
        if a.memory:
            for kind in ("ei", "ei_unhoisted", "bn"):
                r = peak_mb(key, kind, T=a.T, threads=a.threads)
                print(f"  peak step memory {kind:13} {r.get('peak_mb', r.get('error')):>8} MB")


if __name__ == "__main__":
    main()
