"""Estimated vs measured memory of one training step (eidsl.lang.checks.estimate_bytes).

Each configuration runs in a fresh process: it warms the PyTorch runtime up with a
one-sample step of the same network (the first step in a process also pays a fixed
~170 MB for kernels and thread pools, which is not the spec's), resets the kernel's
peak-RSS mark, then measures how far the peak rises above the resident size over
building the network, one forward, backward and SGD-with-momentum step at the batch
size asked for. (Not getrusage: its ru_maxrss survives exec, so a child of a large
process starts with the parent's peak.)

    python3 bench/memory.py            # the table in docs/reliability.md
    python3 bench/memory.py --quick    # MLPs only
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEP = r"""
import ctypes, gc, json, sys
import torch
torch.set_num_threads(1)
import eidsl
from bench.memory import peak_rss, reset_peak_rss, rss
from eidsl.api import build_graph, load_graph, optimizer
from eidsl.lang.checks import estimate_bytes

spec, batch, params = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
graph = load_graph(spec, batch=batch, **params)
inp = graph.node(graph.input_name)
x = torch.rand(batch, *inp.shape) if inp.encoding == "static" else torch.rand(batch, inp.T, *inp.shape)
y = torch.randint(0, graph.node(graph.output).shape[0], (batch,))


def step(net, x, y):
    opt = optimizer(net, 0.01)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    return opt


warm = build_graph(graph)
step(warm, x[:1], y[:1])
del warm
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)     # hand the warm-up's freed heap back, so reuse counts as growth
reset_peak_rss()
before = rss()
net = build_graph(graph)
opt = step(net, x, y)
print(json.dumps({"measured": peak_rss() - before, **estimate_bytes(graph, batch)}))
"""


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def rss() -> int:
    """Resident memory of this process now, in bytes."""
    return _status("VmRSS")


def peak_rss() -> int:
    """Highest resident memory since the process started or since reset_peak_rss()."""
    return _status("VmHWM")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")     # Linux >= 4.0: VmHWM := VmRSS
    except OSError:
        pass


def measure(spec: str, batch: int, **params) -> dict:
    """Estimate and measured peak growth (bytes) of one training step, in a fresh process."""
    run = subprocess.run([sys.executable, "-c", STEP, str(ROOT / spec), str(batch), json.dumps(params)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


CONFIGS = [
    ("specs/mlp.ei", 1024, {"family": "ei", "paper": True}),
    ("specs/mlp.ei", 1024, {"family": "bn"}),
    ("specs/mlp.ei", 1024, {"family": "plain"}),
    ("specs/mlp.ei", 256, {"family": "ei", "depth": 8, "T": 8, "paper": True}),
    ("specs/vgg.ei", 16, {"family": "ei", "paper": True}),
    ("specs/vgg.ei", 16, {"family": "bn"}),
    ("specs/vgg.ei", 16, {"family": "plain"}),
    ("specs/resnet.ei", 8, {"family": "ei", "paper": True}),
]


def main(argv: list[str]) -> None:
    configs = [c for c in CONFIGS if "mlp" in c[0]] if "--quick" in argv else CONFIGS
    print(f"{'spec':<16} {'params':<38} {'batch':>5} {'estimate MiB':>13} {'measured MiB':>13} {'ratio':>6}")
    for spec, batch, params in configs:
        r = measure(spec, batch, **params)
        ratio = r["total_bytes"] / r["measured"]
        print(f"{Path(spec).name:<16} {json.dumps(params):<38} {batch:>5} {r['total_bytes'] / 2**20:>13.1f} "
              f"{r['measured'] / 2**20:>13.1f} {ratio:>6.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
