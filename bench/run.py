"""The benchmark proper: cases side by side, scaling in T and batch, and the LIF variants."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, replace

import torch
import torch.nn.functional as F

from . import step_memory as memory
from .cases import CASES, Setup, autocast, batch_for, build, logits, train_step
from .timing import interleaved, median_ms, paired_ratio, timed


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _addmm_flop(self_shape, a_shape, b_shape, *_, out_shape=None, **__) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _baddbmm_flop(self_shape, a_shape, b_shape, *_, out_shape=None, **__) -> int:
    return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]


def step_gflop(step) -> float:
    """Multiply-add work of one training step in GFLOP (matmuls and convolutions, forward and backward,
    as torch's FlopCounterMode counts them): what the step would cost at equal arithmetic speed.
    The in-place products that accumulate a sum (the circuit's dL/ds_I) count too: torch counts
    only the out-of-place ones."""
    from torch.utils.flop_counter import FlopCounterMode
    in_place = {torch.ops.aten.addmm_: _addmm_flop, torch.ops.aten.baddbmm_: _baddbmm_flop}
    with FlopCounterMode(display=False, custom_mapping=in_place) as counter:
        step()
    return counter.get_total_flops() / 1e9


def compile_stats() -> tuple[int, int]:
    """(graphs, graph breaks) counted by dynamo since its last reset."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def run_case(key: str, setup: Setup, reps: int, compile: bool, mem: bool, before: bool = False,
             cold: bool = False, log=print) -> dict:
    case = CASES[key]
    x, y = batch_for(case, setup)
    kinds = ["ei", "bn", "floor"] + (["ei_compiled"] if compile else []) + (["ei_plain"] if before else [])
    models = {k: build(case, k, setup, x) for k in kinds}
    steps = {k: train_step(m, o, x, y, setup, plain=k == "ei_plain") for k, (m, o) in models.items()}
    out: dict = {"title": case.title, "batch": setup.batch or case.batch, "T": setup.T}
    if compile:
        torch._dynamo.reset()
        # The layer kernels (compiler/kernels.py: ahead-of-time libraries on a CPU, dynamo graphs of
        # their own elsewhere; the compiled network runs them too) build or load here, outside the
        # network's compile time and graph count.
        with autocast(setup):
            loss = F.cross_entropy(models["ei"][0](x).float(), y)
        loss.backward()
        models["ei"][1].zero_grad(set_to_none=True)
        from torch._dynamo.utils import counters
        counters.clear()
        if cold:
            import torch._inductor.config as inductor_config
            inductor_config.force_disable_caches = True
        compiled = models["ei_compiled"][0]
        start = time.perf_counter()
        first = compiled(x.contiguous(memory_format=torch.channels_last) if setup.channels_last and x.dim() == 4 else x)
        compile_s = time.perf_counter() - start + timed(steps["ei_compiled"])
        out["graphs"], out["graph_breaks"] = compile_stats()
        eager_logits = models["ei"][0](x)
        out["compiled_vs_eager_rel"] = _rel(first.detach().float(), eager_logits.detach().float())
        del first, eager_logits
        out["compile_s"] = compile_s
        out["compile_cache"] = "disabled (cold)" if cold else "inductor caches on (warm after a first run)"
        log(f"  {key}: compiled in {compile_s:.1f} s, {out['graphs']} graph(s), {out['graph_breaks']} break(s)")
    # What each time ratio is read against: the E-I step also runs the W_EI products and the E->I
    # outputs, so even at equal arithmetic speed it costs more than the BN-SNN by the flop ratio.
    out["gflop"] = {k: step_gflop(steps[k]) for k in ("ei", "bn", "floor")}
    times = interleaved(steps, reps, warmup=1)
    out["ms"] = {k: median_ms(v) for k, v in times.items()}
    out["min_ms"] = {k: 1e3 * min(v) for k, v in times.items()}
    out["samples_ms"] = {k: [1e3 * t for t in v] for k, v in times.items()}
    out["ratio"] = {"ei/bn": paired_ratio(times["ei"], times["bn"]),
                    "ei/floor": paired_ratio(times["ei"], times["floor"]),
                    "bn/floor": paired_ratio(times["bn"], times["floor"]),
                    "flop ei/bn": out["gflop"]["ei"] / out["gflop"]["bn"],
                    "flop ei/floor": out["gflop"]["ei"] / out["gflop"]["floor"]}
    if before:
        out["ratio"]["before/after"] = paired_ratio(times["ei_plain"], times["ei"])
        out["ratio"]["before ei/bn"] = paired_ratio(times["ei_plain"], times["bn"])
    if compile:
        out["ratio"]["compiled/eager"] = paired_ratio(times["ei_compiled"], times["ei"])
        out["ratio"]["compiled/bn"] = paired_ratio(times["ei_compiled"], times["bn"])
    log(f"  {key}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in out["ms"].items()))
    del models, steps
    if mem:
        out["peak_mb"] = {}
        for kind in ("ei", "bn", "floor") + (("ei_plain",) if before else ()):
            r = memory.peak_mb(key, kind, setup.device, setup.T, setup.amp, setup.channels_last,
                               torch.get_num_threads())
            out["peak_mb"][kind] = r.get("peak_mb")
            if "error" in r:
                out.setdefault("memory_errors", {})[kind] = r["error"]
        if out["peak_mb"].get("ei") and out["peak_mb"].get("bn"):
            out["ratio"]["mem ei/bn"] = out["peak_mb"]["ei"] / out["peak_mb"]["bn"]
        out["memory_method"] = "cuda.max_memory_allocated" if setup.device.startswith("cuda") else "VmHWM delta"
    return out


def run_scaling(key: str, setup: Setup, Ts, T_batch: int, batches, reps: int, log=print) -> dict:
    """E-I and BN-SNN eager step time as T and the batch grow; ms per step and per T*B sample."""
    case = CASES[key]
    rows = []
    for axis, T, b in [("T", T, T_batch) for T in Ts] + [("batch", 4, b) for b in batches]:
        s = replace(setup, T=T, batch=b)
        x, y = batch_for(case, s)
        models = {k: build(case, k, s, x) for k in ("ei", "bn")}
        steps = {k: train_step(m, o, x, y, s) for k, (m, o) in models.items()}
        times = interleaved(steps, reps, warmup=1)
        batch = b
        row = {"axis": axis, "T": T, "batch": batch,
               "ei_ms": median_ms(times["ei"]), "bn_ms": median_ms(times["bn"]),
               "ei_min_ms": 1e3 * min(times["ei"]), "bn_min_ms": 1e3 * min(times["bn"]),
               "ei/bn": paired_ratio(times["ei"], times["bn"])}
        # The fastest repetition is the least disturbed by other processes: per-sample cost from it.
        row["ei_ms_per_sample"] = row["ei_min_ms"] / (T * batch)
        rows.append(row)
        log(f"  scaling {key} T={T} batch={batch}: E-I {row['ei_ms']:.0f} ms, BN {row['bn_ms']:.0f} ms")
    return {"case": key, "rows": rows}


def check_amp(key: str, setup: Setup) -> dict:
    """Effect of bf16 autocast on the logits of a freshly initialised E-I network (same weights)."""
    case = CASES[key]
    x, _ = batch_for(case, setup)
    model, _ = build(case, "ei", replace(setup, amp=None), x)
    ref = logits(model, x, replace(setup, amp=None))
    low = logits(model, x, replace(setup, amp="bf16"))
    agree = float((ref.argmax(1) == low.argmax(1)).float().mean())
    return {"case": key, "max_rel_diff": _rel(low, ref), "argmax_agreement": agree}


def meta(setup: Setup, args) -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if setup.device.startswith("cuda") else None,
            "setup": asdict(setup), "reps": args.reps, "quick": args.quick,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
