"""Five ways to run the multi-step LIF (forward + backward) on one E-I VGG-8 layer-1 sized input:

  autograd loop       the explicit per-step loop, every op recorded by autograd (eidsl before issue 5)
  Function            fused.LIF with its own eager code: hand-written forward/backward, saves only h
  Function + kernels  fused.LIF running the compiled kernels of compiler/kernels.py (eidsl's default)
  torch.compile       the explicit loop compiled (inductor fuses each direction into one kernel)
  library op          the Function's eager code registered as a torch.library custom op
"""
from __future__ import annotations

import time

import torch

from eidsl_compiler import fused
from eidsl_compiler import kernels
from eidsl_compiler import ops

from .timing import interleaved, median_ms, paired_ratio


@torch.library.custom_op("eidsl_bench::lif", mutates_args=())
def lif_op(current: torch.Tensor, T: int, decay: float, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    return fused.lif_forward(current, T, decay, theta, True, 0.0)


@lif_op.register_fake
def _lif_op_fake(current, T, decay, theta):
    return torch.empty_like(current), torch.empty_like(current)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.cfg = inputs[1:]


def _backward(ctx, grad_spikes, grad_h):
    (h,) = ctx.saved_tensors
    T, decay, theta = ctx.cfg
    return fused.lif_backward(grad_spikes, h, T, decay, theta, True, 0.0, True, "sigmoid", 4.0), None, None, None


lif_op.register_autograd(_backward, setup_context=_setup)


def loop(current: torch.Tensor, T: int) -> torch.Tensor:
    with ops.use_fused(False):
        return ops.lif(current, T)


def function(current: torch.Tensor, T: int) -> torch.Tensor:
    return fused.LIF.apply(current, T, 2.0, 1.0, "soft", 0.0, True, "sigmoid", 4.0)


def function_kernels(current: torch.Tensor, T: int) -> torch.Tensor:
    return fused.LIF.apply(current, T, 2.0, 1.0, "soft", 0.0, True, "sigmoid", 4.0)


function.kernels, function_kernels.kernels = False, True       # for the forward and the backward


def library(current: torch.Tensor, T: int) -> torch.Tensor:
    return lif_op(current, T, 0.5, 1.0)[0]


def saved_mb(fn, x: torch.Tensor, T: int) -> float:
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x, T)
    return sum(storages.values()) / 2**20


def compare(device: str = "cpu", compile: bool = True, reps: int = 5, T: int = 4, shape=(16, 64, 32, 32),
            log=print) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(T * shape[0], *shape[1:], generator=gen) * 1.2 + 0.6).to(device).requires_grad_(True)
    grad = torch.randn(x.shape, generator=gen).to(device)
    variants = {"autograd loop": loop, "Function": function, "Function + kernels": function_kernels,
                "library op": library}
    out: dict = {"shape": f"T={T}, {tuple(x.shape)}", "variants": {}}
    if compile:
        compiled = torch.compile(lambda c, T: ops.lif(c, T), dynamic=False)
        start = time.perf_counter()
        compiled(x, T).backward(grad)
        out["compile_s"] = time.perf_counter() - start
        variants["torch.compile(loop)"] = compiled
    want = loop(x, T)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step(fn):
        def run():
            x.grad = None
            with kernels.use_kernels(getattr(fn, "kernels", kernels.active())):
                fn(x, T).backward(grad)
            sync()
        return run
    def step_output(fn):
        with kernels.use_kernels(getattr(fn, "kernels", kernels.active())):
            return fn(x, T).detach()
    times = interleaved({k: step(f) for k, f in variants.items()}, reps, warmup=1)
    for name, fn in variants.items():
        row = {"ms": median_ms(times[name]), "ratio": paired_ratio(times[name], times["autograd loop"]),
               "same_spikes": bool(torch.equal(step_output(fn), want.detach()))}
        if name != "torch.compile(loop)":
            row["saved_mb"] = saved_mb(fn, x, T)
        out["variants"][name] = row
    log("  lif: " + ", ".join(f"{k} {v['ms']:.1f} ms" for k, v in out["variants"].items()))
    return out
