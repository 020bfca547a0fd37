"""Every init rule in one place: the data-free rules (`initialise`, `fill`) and E-I Init (docs/science.md §2),
with its two closed forms, Eq. 53 (`balanced_scale`) and Eq. 54 (`gain_control`).

E-I Init is data-dependent, layer by layer, on the first training batch.

The pass runs the network once on the batch. Just before each projection it
measures that projection's actual input (time folded into the batch), draws the
exponential E->E and E->I weights at the balanced scale ("Eq. 53") and sets the
inhibitory gain g_I ("Eq. 54") of the populations it feeds. The layer's output
is then computed with the new weights, so the next layer sees its real input.
It runs once, explicitly, and never lives in the compiled forward.

A projection inside a recurrent loop reads spikes that the loop itself makes: the
loop is run once with its provisional weights to measure that input, the weights
are drawn from it, and only then does the loop run for real, so every later layer
still sees the actual output of the initialised loop.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from eidsl.errors import SpecError

from eidsl_compiler.network import Network, run_loop
from eidsl_compiler.plan import ParamSpec


# ---------------------------------------------------------------- the closed forms (docs/science.md §2.2)


def balanced_scale(mean: float, mean_sq: float, var: float, fan_in: int) -> float:
    """sigma_w = sqrt(Var[x] / (d (E[x^2] + Var[x])))   ("Eq. 53")."""
    return math.sqrt(var / (fan_in * (mean_sq + var)))


def gain_control(mean: float, mean_sq: float, var: float, fan_in: int) -> float:
    """g_I = sqrt(E[x^2] + Var[x]) / (sqrt(d) E[x])   ("Eq. 54")."""
    return math.sqrt(mean_sq + var) / (math.sqrt(fan_in) * mean)


# ---------------------------------------------------------------- data-free rules


def initialise(net: Network, seed: int = 0) -> None:
    """Rules that need no data. ei_balanced/gain_control weights are left for E-I Init (init.py),
    given a provisional value so an un-initialised network still runs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for path, spec in net.param_specs.items():
            if spec.init.rule != "mean_of":
                fill(net.tensor(path), spec, gen)
        for path, spec in net.param_specs.items():
            if spec.init.rule == "mean_of":   # a tie at init only: the row-mean of another weight
                net.tensor(path).copy_(net.tensor(spec.init.ref).mean(0, keepdim=True).expand_as(net.tensor(path)))
        net.clamp_()


def fill(t: torch.Tensor, spec: ParamSpec, gen: torch.Generator) -> None:
    rule, init = spec.init.rule, spec.init
    fan_in = max(spec.fan_in, 1)
    bound = 1.0 / math.sqrt(fan_in)
    if rule == "constant":
        t.fill_(init.value)
    elif rule == "zeros":
        t.zero_()
    elif rule == "ones":
        t.fill_(1.0)
    elif rule in ("default", "abs_default"):
        # PyTorch's nn.Linear/Conv default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(d), 1/sqrt(d)).
        t.uniform_(-bound, bound, generator=gen)
        if rule == "abs_default":
            t.abs_()
    elif rule == "kaiming":
        fan_out = t.shape[0] * (math.prod(t.shape[2:]) if t.dim() > 2 else 1)
        t.normal_(0.0, math.sqrt(2.0 / fan_out), generator=gen)
    elif rule == "uniform":
        t.uniform_(init.low, init.high, generator=gen)
    elif rule == "normal":
        t.normal_(init.mean, init.std, generator=gen)
    elif rule == "exponential":
        t.exponential_(1.0 / init.scale, generator=gen)
    elif rule == "ei_balanced":
        # Placeholder until E-I Init sees data: the binary-input scale at firing rate 0.2.
        t.exponential_(1.0 / math.sqrt(0.8 / (1.8 * fan_in)), generator=gen)
    elif rule == "gain_control":
        t.fill_(math.sqrt(1.8 / (0.2 * fan_in)))
    elif rule == "unit_std":    # until the first batch: the identity gain and bias
        t.fill_(1.0)
    elif rule == "zero_mean":
        t.zero_()
    else:
        raise ValueError(rule)


# ---------------------------------------------------------------- E-I Init


class InitError(SpecError):
    """E-I Init cannot proceed on this batch; located at the projection whose input it measures."""


# Sums that make the statistics; reducing them across processes gives the global batch's values.
Reducer = Callable[[torch.Tensor], torch.Tensor]


def per_neuron(x: torch.Tensor, reduce: Reducer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each neuron's (a conv's: each channel's) mean and standard deviation over the rows of x
    (time folded into the batch) and, for a conv, over positions: BatchNorm's statistics."""
    x = x.detach().double()
    x = x.transpose(0, 1).flatten(1) if x.dim() > 2 else x.t()
    sums = torch.cat([torch.tensor([float(x.shape[1])], dtype=torch.float64), x.sum(1), (x * x).sum(1)])
    if reduce is not None:
        sums = reduce(sums)
    n, features = sums[0], x.shape[0]
    mean = sums[1:1 + features] / n
    var = (sums[1 + features:] / n - mean * mean).clamp_min(0)
    return mean, var.sqrt()


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

    def data_dependent(step) -> tuple[list[str], list[str]]:
        paths = [p for p in step.params.weights if specs[p].init.rule == "ei_balanced"]
        targets = {specs[p].node for p in step.params.weights}
        gains = [p for p, s in specs.items() if s.node in targets and s.init.rule == "gain_control"]
        return paths, gains

    def initialise(step, x: torch.Tensor) -> None:
        paths, gains = data_dependent(step)
        if not paths and not gains:
            return
        mean, mean_sq, var = statistics(x, reduce)
        if mean_sq + var == 0 or (gains and mean == 0):
            where = ", ".join(paths + gains)
            raise InitError(f"E-I Init: the input of {where} is silent on this batch (all zeros), so its "
                            "statistics fix no scale", step.loc.span() if step.loc else None,
                            hint="initialise on a larger or more active batch (the first training batch), "
                                 "or load trained weights")
        for path in paths:
            spec = specs[path]
            sigma = balanced_scale(mean, mean_sq, var, spec.fan_in)
            draw = rng.exponential(scale=sigma, size=spec.shape)
            net.tensor(path).copy_(torch.from_numpy(draw))
            scales[path] = sigma
        for path in gains:
            net.tensor(path).fill_(gain_control(mean, mean_sq, var, specs[path].fan_in))

    def standardise(step, env) -> None:
        """unit_std / zero_mean: rescale the population's gain and bias from its current on this batch,
        and the current itself in place, so later layers' E-I Init measures what they will receive."""
        own = {s.init.rule: p for p, s in specs.items() if s.node == step.node}
        gain, bias = own.get("unit_std"), own.get("zero_mean")
        if gain is None and bias is None:
            return
        current = env[step.ins[0]]
        mean, std = per_neuron(current, reduce)
        # I_int = g_E r + b_E: a new gain scales I_int - b_E, a new bias shifts I_int.
        b_E = next((p for p, s in specs.items() if s.node == step.node and s.role in ("b_E", "b")), None)
        offset = net.tensor(b_E).double() if b_E is not None else torch.zeros_like(mean)
        scale, shift = torch.ones_like(mean), torch.zeros_like(mean)
        if gain is not None:
            if bool((std == 0).any()):
                raise InitError(f"unit_std: {int((std == 0).sum())} of {std.numel()} neurons of '{step.node}' get "
                                "the same current for every sample of this batch, so no gain gives them std 1",
                                step.loc.span() if step.loc else None,
                                hint="initialise on a larger or more varied batch, or give the gain a number")
            scale = 1.0 / std
            net.tensor(gain).mul_(scale.to(net.tensor(gain).dtype))
        if bias is not None:
            shift = -(offset + (mean - offset) * scale)      # minus the mean after the new gain
            net.tensor(bias).add_(shift.to(net.tensor(bias).dtype))
        view = (1, -1) + (1,) * (current.dim() - 2)          # per neuron, channels on dim 1
        o, sc, sh = (v.to(current.dtype).view(view) for v in (offset, scale, shift))
        current.sub_(o).mul_(sc).add_(o + sh)

    def hook(step, env):
        if step.op == "project":
            initialise(step, env[step.ins[0]])
        elif step.op in ("lif", "relu", "identity") and step.ins[0].endswith(":I_int"):
            standardise(step, env)
        elif step.op == "loop":
            inner = [s for s in step.attrs.body if s.op == "project" and any(data_dependent(s))]
            if inner:
                seen = run_loop(net, step, [env[i] for i in step.ins], keep=True)
                for s in inner:
                    initialise(s, seen[s.ins[0]])

    net.run(batch, hook=hook)
    net.clamp_()
    return scales
