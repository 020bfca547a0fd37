"""The paper's math, in one place, named in its terms (docs/science.md §1.2, §3).

Tensors carry time folded into the batch, (T*B, features) or (T*B, C, H, W),
except inside the LIF, which unfolds time to integrate the membrane.

    I_EE = W_EE x,  I_IE = W_IE x                      (one fused projection)
    s_I  = max(0, I_IE)                                  (fast interneurons)
    I_sub = W_EI s_I,  I_div = W_EI (g_I * s_I)          (one batched product)
    I_int = g_E * (I_EE - I_sub) / stabilise(I_div) + b_E
    output layer: I_EE - I_sub, averaged over T
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from eidsl_compiler import fused
from eidsl_compiler import kernels

class _Switch:
    """A module-wide on/off setting, changed for the length of a `with` block."""

    def __init__(self, on: bool = True):
        self.on = on

    @contextlib.contextmanager
    def __call__(self, enabled: bool):
        previous, self.on = self.on, enabled
        try:
            yield
        finally:
            self.on = previous


# The hand-derived Functions of fused.py run in eager mode; under torch.compile (and with
# use_fused(False), which the benchmark uses for before/after numbers) the plain formulas below
# are used, which the compiler fuses itself. Both give the same values (tests/compiler/test_fused.py).
use_fused = _Switch()
# Static-input hoisting (project_static); off only to measure or test against the T-fold product.
hoist_static = _Switch()


def _fast() -> bool:
    return use_fused.on and not torch.compiler.is_compiling()


# ---------------------------------------------------------------- time encoding


def repeat_static(x: torch.Tensor, T: int) -> torch.Tensor:
    """A static image is shown at every time step (direct encoding): (B, ...) -> (T*B, ...)."""
    return x.unsqueeze(0).expand(T, *x.shape).reshape(T * x.shape[0], *x.shape[1:])


def fold_events(x: torch.Tensor) -> torch.Tensor:
    """Event frames (B, T, ...) -> time-major folded (T*B, ...)."""
    return x.transpose(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unfold_time(x: torch.Tensor, T: int) -> torch.Tensor:
    return x.view(T, x.shape[0] // T, *x.shape[1:])


def fold_time(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def delay(x: torch.Tensor, T: int, steps: int) -> torch.Tensor:
    """The value of `steps` time steps earlier; zero before the first step."""
    seq = unfold_time(x, T)
    shifted = torch.cat([torch.zeros_like(seq[:steps]), seq[:-steps]], 0)
    return fold_time(shifted)


def readout_mean(x: torch.Tensor, T: int) -> torch.Tensor:
    """Logits are the mean over time of the output current."""
    return unfold_time(x, T).mean(0)


# ---------------------------------------------------------------- projections


def project(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor | None],
            op: str, stride: int = 1, padding: int = 0) -> list[torch.Tensor]:
    """E->E and E->I (and any other projections sharing a source): a conv with the concatenated
    weight, then split, or one conv per weight where the weights outweigh the output
    (`fused.convs_apart`); matmuls one per weight (the same values, without copying the weights)."""
    if len(weights) > 1 and all(b is None for b in biases) and _fast():
        return list(fused.Project.apply(x, op != "dense", stride, padding, *weights))
    if op == "dense":
        return [F.linear(x, w, b) for w, b in zip(weights, biases)]
    if len(weights) > 1 and fused.convs_apart(x, weights[0], stride, padding):
        return [F.conv2d(x, w, b, stride=stride, padding=padding) for w, b in zip(weights, biases)]
    weight = weights[0] if len(weights) == 1 else torch.cat(weights, 0)
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases)])
    out = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    if len(weights) == 1:
        return [out]
    return list(out.split([w.shape[0] for w in weights], dim=1))


def project_static(x: torch.Tensor, T: int, weights: list[torch.Tensor], biases: list[torch.Tensor | None],
                   op: str, stride: int = 1, padding: int = 0) -> list[torch.Tensor]:
    """project(repeat_static(x, T), ...) for a static image x (B, ...): the product is computed once
    per sample and its outputs repeated over T. The repeat's backward sums the output gradients over T,
    so the weight gradient is one product of that sum with x, not T products with T copies of x, and
    only x (not its T copies) is kept for it. Forward values are those of the T-fold product
    (tests/test_hoist.py); the weight gradient differs only in summation order."""
    if not hoist_static.on:
        return project(repeat_static(x, T), weights, biases, op, stride, padding)
    return [repeat_static(out, T) for out in project(x, weights, biases, op, stride, padding)]


_channels = fused.channels
pointwise = fused.pointwise


def scale_grad(w: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward (bit-exact), gradient multiplied by `scale` (E-I Prop's 1/d for W_EI)."""
    return w.detach() + scale * (w - w.detach())


# ---------------------------------------------------------------- inhibition


def inhibition_currents(s_I: torch.Tensor, W_EI: torch.Tensor, g_I: torch.Tensor | None,
                        subtractive: bool, divisive: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """I_sub = W_EI s_I and I_div = W_EI (g_I * s_I), computed by one product when both are needed."""
    if subtractive and divisive and g_I is not None and _fast():
        return fused.Inhibition.apply(s_I, W_EI, g_I)
    if subtractive and divisive:
        gated = s_I * _channels(g_I, s_I) if g_I is not None else s_I
        both = pointwise(W_EI, torch.cat([s_I, gated], 0))
        I_sub, I_div = both.chunk(2, 0)
        return I_sub, I_div
    if subtractive:
        return pointwise(W_EI, s_I), None
    gated = s_I * _channels(g_I, s_I) if g_I is not None else s_I
    return None, pointwise(W_EI, gated)


def inhibition(s_Is, W_EIs, g_Is, modes) -> tuple[torch.Tensor | None, torch.Tensor | None, object | None]:
    """One population's inhibition from all its inhibitors: I_sub = sum_k W_EI^k s_I^k and
    I_div = sum_k W_EI^k (g_I^k s_I^k). Each W_EI and g_I comes as the circuit uses it (gradient
    factor and transform already applied by Network.value or its generated equivalent). Returns both
    sums (None where no inhibitor has that path) and the settings (`plan.Inhibitor`) of the last divisive
    path, which say how to stabilise the divisor. The network, the probe and generated code all call
    this: the circuit's per-inhibitor loop is written here only."""
    I_sub = I_div = rule = None
    for s_I, paths, g_I, mode in zip(s_Is, W_EIs, g_Is, modes):
        if len(paths) == 1:
            sub, div = inhibition_currents(s_I, paths[0], g_I, mode.subtractive, mode.divisive)
        else:   # separate matrices for the two paths (`shared = false`)
            sub, _ = inhibition_currents(s_I, paths[0], None, True, False)
            _, div = inhibition_currents(s_I, paths[1], g_I, False, True)
        I_sub = sub if I_sub is None else (I_sub if sub is None else I_sub + sub)
        I_div = div if I_div is None else (I_div if div is None else I_div + div)
        if mode.divisive:
            rule = mode
    return I_sub, I_div, rule


def integrate_terms(I_EE: torch.Tensor | None, I_sub: torch.Tensor | None, I_div: torch.Tensor | None, rule,
                    g_E: torch.Tensor | None, b_E: torch.Tensor | None, balanced_only: bool) -> torch.Tensor:
    """I_int from the circuit's terms: an output layer's balanced current I_EE - I_sub, or
    g_E (I_EE - I_sub) / stabilise(I_div) + b_E with the divisive path's stabiliser `rule`."""
    if I_EE is None:   # a population driven by inhibition alone
        I_EE = torch.zeros_like(I_sub if I_sub is not None else I_div)
    if balanced_only:
        return I_EE if I_sub is None else I_EE - I_sub
    if I_div is not None:
        I_div = stabilise(I_div, rule.stabilize, rule.ste, rule.epsilon)
    return integrate(I_EE, I_sub, I_div, g_E, b_E)


def ei_circuit(I_EE: torch.Tensor, s_I: torch.Tensor, W_EI: torch.Tensor, g_I: torch.Tensor,
               g_E: torch.Tensor, b_E: torch.Tensor) -> torch.Tensor:
    """The whole standard circuit, g_E (I_EE - W_EI s_I) / min_positive_STE(W_EI (g_I s_I)) + b_E.

    Eager: one Function saving I_EE - I_sub and s_I only. Same values as inhibition_currents,
    stabilise and integrate in a row, which is what the compiled path runs."""
    if _fast():
        return fused.Circuit.apply(I_EE, s_I, W_EI, g_I, g_E, b_E)
    I_sub, I_div = inhibition_currents(s_I, W_EI, g_I, True, True)
    return integrate(I_EE, I_sub, stabilise(I_div, "min_positive", True), g_E, b_E)


def ei_circuit_lif(I_EE: torch.Tensor, s_I: torch.Tensor, W_EI: torch.Tensor, g_I: torch.Tensor,
                   g_E: torch.Tensor, b_E: torch.Tensor, T: int, tau: float = 2.0, theta: float = 1.0,
                   reset: str = "soft", v_reset: float = 0.0, detach_reset: bool = True,
                   surrogate: str = "sigmoid", alpha: float = 4.0) -> torch.Tensor:
    """lif(ei_circuit(...)): the E population's spikes. Eager: one Function (fused.CircuitLIF)."""
    neuron = (T, tau, theta, reset, v_reset, detach_reset, surrogate, alpha)
    if _fast():
        return fused.CircuitLIF.apply(I_EE, s_I, W_EI, g_I, g_E, b_E, *neuron)
    if use_fused.on and not torch.is_autocast_enabled(I_EE.device.type):
        # Compiling: one opaque op running the same kernels (under autocast, the plain formulas).
        return fused.circuit_lif_op(I_EE, s_I, W_EI, g_I, g_E, b_E, *neuron)[0]
    return lif(ei_circuit(I_EE, s_I, W_EI, g_I, g_E, b_E), T, tau, theta, reset, v_reset, detach_reset,
               surrogate, alpha)


def min_positive(I_div: torch.Tensor) -> torch.Tensor:
    """Exact zeros replaced by the smallest positive entry of the same sample and time step.

    A row with no positive entry gets +inf, so its integrated current is b_E alone.
    Branchless and free of host synchronisation; reduces over dims, so channels-last stays put.
    """
    return fused.min_positive(I_div)


def straight_through(x: torch.Tensor, replaced: torch.Tensor) -> torch.Tensor:
    """Forward `replaced` exactly, backward the identity to `x` (E-I Prop, docs/science.md §3 item 2)."""
    return replaced.detach() + (x - x.detach())


def stabilise(I_div: torch.Tensor, rule: str, ste: bool, epsilon: float = 1e-8) -> torch.Tensor:
    """Make the divisor safe: min-positive replacement (the paper's), I_div + epsilon, or nothing."""
    if rule == "epsilon":
        return I_div + epsilon
    if rule == "none":
        return I_div
    if ste and _fast():
        return fused.MinPositiveSTE.apply(I_div)
    if ste:
        return straight_through(I_div, min_positive(I_div.detach()))
    return min_positive(I_div)


def integrate(I_EE: torch.Tensor, I_sub: torch.Tensor | None, I_div: torch.Tensor | None,
              g_E: torch.Tensor | None, b_E: torch.Tensor | None) -> torch.Tensor:
    """I_int = g_E * (I_EE - I_sub) / I_div + b_E (terms absent from the circuit are skipped)."""
    if I_sub is not None and I_div is not None and g_E is not None and b_E is not None and _fast():
        return fused.Integrate.apply(I_EE, I_sub, I_div, g_E, b_E)
    current = I_EE if I_sub is None else I_EE - I_sub
    if g_E is not None:
        current = current * _channels(g_E, current)
    if I_div is not None:
        current = current / I_div
    if b_E is not None:
        current = current + _channels(b_E, current)
    return current


# ---------------------------------------------------------------- neurons


def relu(x: torch.Tensor) -> torch.Tensor:
    """Fast-spiking interneurons at steady state (docs/science.md §1.2 item 2)."""
    return torch.relu(x)


surrogate_grad = kernels.surrogate_grad     # d spike / d v at x = v - theta


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kind: str, alpha: float):
        ctx.save_for_backward(x)
        ctx.kind, ctx.alpha = kind, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * surrogate_grad(x, ctx.kind, ctx.alpha), None, None


def spike(x: torch.Tensor, kind: str = "sigmoid", alpha: float = 4.0) -> torch.Tensor:
    return _Spike.apply(x, kind, alpha)


def lif_step(v: torch.Tensor, current: torch.Tensor, tau: float, theta: float, reset: str, v_reset: float,
             detach_reset: bool, surrogate: str, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: charge v <- v (1 - 1/tau) + I, fire s = [v >= theta], reset (soft: v - theta s)."""
    v = v * (1.0 - 1.0 / tau) + current
    s = spike(v - theta, surrogate, alpha)
    r = s.detach() if detach_reset else s
    v = v - theta * r if reset == "soft" else r * v_reset + (1 - r) * v
    return v, s


def lif(current: torch.Tensor, T: int, tau: float = 2.0, theta: float = 1.0, reset: str = "soft",
        v_reset: float = 0.0, detach_reset: bool = True, surrogate: str = "sigmoid",
        alpha: float = 4.0) -> torch.Tensor:
    """Multi-step LIF over folded (T*B, ...) currents; v starts at 0 on every call.

    Eager: one hand-derived Function (fused.LIF) saving only the membrane before the spike.
    Compiled: the explicit loop, which the compiler turns into one fused kernel per direction."""
    if _fast():
        return fused.LIF.apply(current, T, tau, theta, reset, v_reset, detach_reset, surrogate, alpha)
    seq = unfold_time(current, T)
    v = torch.zeros_like(seq[0])
    spikes = []
    for t in range(T):
        v, s = lif_step(v, seq[t], tau, theta, reset, v_reset, detach_reset, surrogate, alpha)
        spikes.append(s)
    return torch.stack(spikes).flatten(0, 1)


# ---------------------------------------------------------------- pooling and shape


def avgpool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    return F.avg_pool2d(x, kernel, stride)


def maxpool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    return F.max_pool2d(x, kernel, stride)


def global_avgpool(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3), keepdim=True)


def flatten(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def spike_sum(*xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out
