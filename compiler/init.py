"""E-I Init (PAPER.md §2): data-dependent, layer by layer, on the first training batch.

The pass runs the network once on the batch. Just before each projection it
measures that projection's actual input (time folded into the batch), draws the
exponential E->E and E->I weights at the balanced scale ("Eq. 53") and sets the
inhibitory gain g_I ("Eq. 54") of the populations it feeds. The layer's output
is then computed with the new weights, so the next layer sees its real input.
It runs once, explicitly, and never lives in the compiled forward.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from eidsl.errors import SpecError

from . import ops
from .network import Network

# Sums that make the statistics; reducing them across processes gives the global batch's values.
Reducer = Callable[[torch.Tensor], torch.Tensor]


def statistics(x: torch.Tensor, reduce: Reducer | None = None) -> tuple[float, float, float]:
    """E[x], E[x^2], and the mean over features of the unbiased per-feature variance over rows."""
    x = x.detach().double().flatten(1)
    rows = torch.tensor([float(x.shape[0])], dtype=torch.float64)
    sums = torch.cat([rows, x.sum(0), (x * x).sum(0)])
    if reduce is not None:
        sums = reduce(sums)
    n, features = sums[0], x.shape[1]
    s1, s2 = sums[1:1 + features], sums[1 + features:]
    mean = (s1.sum() / (n * features)).item()
    mean_sq = (s2.sum() / (n * features)).item()
    var = ((s2 - s1 * s1 / n) / (n - 1)).mean().item()
    return mean, mean_sq, var


@torch.no_grad()
def ei_init(net: Network, batch: torch.Tensor, seed: int = 2025, reduce: Reducer | None = None) -> dict[str, float]:
    """Initialise every ei_balanced weight and gain_control gain from `batch`; returns sigma_w per projection."""
    rng = np.random.default_rng(seed)
    scales: dict[str, float] = {}
    specs = net.param_specs

    def hook(step, env):
        if step.op != "project":
            return
        paths = [p for p in step.params["weights"] if specs[p].init.rule == "ei_balanced"]
        targets = {specs[p].node for p in step.params["weights"]}
        gains = [p for p, s in specs.items() if s.node in targets and s.init.rule == "gain_control"]
        if not paths and not gains:
            return
        mean, mean_sq, var = statistics(env[step.ins[0]], reduce)
        if not mean_sq + var > 0 or (gains and mean == 0):
            raise _silent_input(step, net, mean, mean_sq)
        for path in paths:
            spec = specs[path]
            sigma = ops.balanced_scale(mean, mean_sq, var, spec.fan_in)
            draw = rng.exponential(scale=sigma, size=spec.shape)
            net.tensor(path).copy_(torch.from_numpy(draw))
            scales[path] = sigma
        for path in gains:
            net.tensor(path).fill_(ops.gain_control(mean, mean_sq, var, specs[path].fan_in))

    net.run(batch, hook=hook)
    net.clamp_()
    return scales


def _silent_input(step, net: Network, mean: float, mean_sq: float) -> SpecError:
    """Eq. 53 divides by E[x^2] + Var[x] and Eq. 54 by E[x]: a projection whose input is zero (or,
    for a gain, averages zero) on the whole batch has no balanced scale."""
    what = "is zero everywhere" if not mean_sq > 0 else "averages zero"
    return SpecError(f"E-I Init: the input of the projection into '{step.node}' {what} on this batch "
                     "(no spikes reach it), so its balanced scale is undefined",
                     step.loc.span() if step.loc else None,
                     hint="use a larger or more varied first batch, or check the layers before it "
                          "(thresholds, delays longer than T)")
