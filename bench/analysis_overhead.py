"""Overhead of the circuit monitor (eidsl/monitor.py) against a training step.

A training step here is what the trainer does: `run(x, keep=True)`, cross-entropy, backward,
sign-constrained SGD. The monitor's record is timed on the same kept tensors. The overhead at a
cadence of one record every C steps is record / (C x step).

    python -m bench.analysis_overhead --spec specs/mlp.ei --spec specs/convnet.ei --batch 64
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(spec: str, batch: int, steps: int, threads: int, device: str, every: int) -> dict:
    import torch
    import torch.nn.functional as F

    from eidsl.train.analyze import training_record
    from eidsl.api import build_graph, ei_init, load_graph, optimizer

    torch.set_num_threads(threads)
    graph = load_graph(ROOT / spec)
    net = build_graph(graph).to(device)
    inp = graph.node(graph.input_name)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *inp.shape, generator=gen).to(device)
    y = torch.randint(0, graph.node(graph.output).shape[0], (batch,), generator=gen).to(device)
    ei_init(net, x)
    opt = optimizer(net, 0.001)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step():
        env = net.run(x, keep=True)
        loss = F.cross_entropy(env[net.plan.output], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return env

    step_times, record_times = [], []
    step()
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        env = net.run(x, keep=True)
        loss = F.cross_entropy(env[net.plan.output], y)
        sync()
        t1 = time.perf_counter()
        with torch.no_grad():
            record = training_record(net, env)
        sync()
        t2 = time.perf_counter()
        json.dumps(record)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        t3 = time.perf_counter()
        step_times.append((t1 - t0) + (t3 - t2))
        record_times.append(t2 - t1)
    s, r = statistics.median(step_times), statistics.median(record_times)
    return {"spec": spec, "batch": batch, "device": device, "threads": threads, "step_s": s, "record_s": r,
            "record_over_step": r / s, "every": every, "overhead_at_every": r / (every * s)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", action="append", default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--every", type=int, default=50, help="the cadence to report the overhead at")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = [measure(s, args.batch, args.steps, args.threads, args.device, args.every)
            for s in args.spec or ["specs/mlp.ei", "specs/convnet.ei"]]
    for r in rows:
        print(f"{r['spec']:<22} batch {r['batch']:>4} {r['device']}: step {1e3 * r['step_s']:8.1f} ms, "
              f"record {1e3 * r['record_s']:7.1f} ms ({100 * r['record_over_step']:.1f} % of a step); "
              f"every {r['every']} steps: {100 * r['overhead_at_every']:.2f} %")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
