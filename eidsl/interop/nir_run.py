"""Run a NIR graph step by step in PyTorch with nirtorch, to check an export against eidsl.

nirtorch wires the graph and maps Linear, Conv2d and AvgPool2d itself; neuron
models are left to the caller. The maps here follow NIR's definitions, integrated
by forward Euler with step dt (the discretisation nir_export's mapping assumes).
Two of nirtorch 2.6's defaults are replaced: its Affine map leaves the bias at its
random initial value, and its Flatten map counts the batch as dimension 0.
"""
from __future__ import annotations

import nir
import nirtorch
import numpy as np
import torch
from torch import nn


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


class LeakyIntegrator(nn.Module):
    """tau dv/dt = (v_leak - v) + r I, one Euler step: v <- (1 - dt/tau) v + (dt/tau) v_leak + (dt r/tau) I."""

    def __init__(self, node, dt: float):
        super().__init__()
        tau = np.asarray(node.tau, dtype=np.float64)
        self.register_buffer("decay", _t(1.0 - dt / tau))
        self.register_buffer("drive", _t(dt / tau * np.asarray(node.v_leak)))
        self.register_buffer("gain", _t(dt * np.asarray(node.r) / tau))

    def step(self, x, state):
        v = torch.zeros_like(x) if state is None else state
        return v * self.decay + (x * self.gain + self.drive)

    def forward(self, x, state=None):
        v = self.step(x, state)
        return v, v


class LeakyIntegrateFire(LeakyIntegrator):
    """LI plus z = [v > v_threshold] and v <- v_reset where z."""

    def __init__(self, node, dt: float):
        super().__init__(node, dt)
        self.register_buffer("threshold", _t(node.v_threshold))
        self.register_buffer("v_reset", _t(node.v_reset))

    def forward(self, x, state=None):
        v = self.step(x, state)
        z = (v > self.threshold).to(x.dtype)
        return z, torch.where(z > 0, self.v_reset.expand_as(v), v)


class IntegrateFire(nn.Module):
    """dv/dt = r I, z = [v > v_threshold], v <- v_reset where z: v <- v + dt r I each step."""

    def __init__(self, node, dt: float):
        super().__init__()
        self.register_buffer("gain", _t(dt * np.asarray(node.r, dtype=np.float64)))
        self.register_buffer("threshold", _t(node.v_threshold))
        self.register_buffer("v_reset", _t(node.v_reset))

    def forward(self, x, state=None):
        v = x * self.gain if state is None else state + x * self.gain
        z = (v > self.threshold).to(x.dtype)
        return z, torch.where(z > 0, self.v_reset.expand_as(v), v)


class Integrator(nn.Module):
    """dv/dt = r I: v <- v + dt r I."""

    def __init__(self, node, dt: float):
        super().__init__()
        self.register_buffer("gain", _t(dt * np.asarray(node.r, dtype=np.float64)))

    def forward(self, x, state=None):
        v = x * self.gain if state is None else state + x * self.gain
        return v, v


class Threshold(nn.Module):
    def __init__(self, node):
        super().__init__()
        self.register_buffer("threshold", _t(node.threshold))

    def forward(self, x):
        return (x > self.threshold).to(x.dtype)


class Scale(nn.Module):
    def __init__(self, node):
        super().__init__()
        self.register_buffer("scale", _t(node.scale))

    def forward(self, x):
        return x * self.scale


class Delay(nn.Module):
    """The input of `delay / dt` steps earlier (zero before the first)."""

    def __init__(self, node, dt: float):
        super().__init__()
        steps = np.unique(np.round(np.asarray(node.delay) / dt).astype(int))
        if len(steps) != 1:
            raise ValueError("this runner supports one delay per Delay node")
        self.steps = int(steps[0])

    def forward(self, x, state=None):
        queue = [torch.zeros_like(x)] * self.steps if state is None else state
        queue = queue + [x]
        return queue[0], queue[1:]


def _affine(node) -> nn.Linear:
    m = nn.Linear(node.weight.shape[-1], node.weight.shape[-2], bias=True)
    m.weight.data = _t(node.weight)
    m.bias.data = _t(node.bias)
    return m


def _flatten(node) -> nn.Flatten:
    # NIR's dimensions exclude the batch; PyTorch's include it.
    start = node.start_dim + 1 if node.start_dim >= 0 else node.start_dim
    end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
    return nn.Flatten(start, end)


def node_map(dt: float = 1.0) -> dict:
    return {
        nir.LI: lambda n: LeakyIntegrator(n, dt),
        nir.LIF: lambda n: LeakyIntegrateFire(n, dt),
        nir.I: lambda n: Integrator(n, dt),
        nir.IF: lambda n: IntegrateFire(n, dt),
        nir.Threshold: Threshold,
        nir.Scale: Scale,
        nir.Delay: lambda n: Delay(n, dt),
        nir.Affine: _affine,
        nir.Flatten: _flatten,
    }


def to_torch(graph: "nir.NIRGraph", dt: float = 1.0) -> torch.nn.Module:
    return nirtorch.nir_to_torch(graph, node_map(dt))


@torch.no_grad()
def run(graph: "nir.NIRGraph", x: torch.Tensor, T: int, events: bool = False, dt: float = 1.0) -> torch.Tensor:
    """Feed x at each of T steps (or frame t of events (B, T, ...) at step t); the output after step T."""
    module = to_torch(graph, dt)
    state, out = None, None
    for t in range(T):
        out, state = module(x[:, t] if events else x, state)
    return out
