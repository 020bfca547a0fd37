"""docs/science.md §1.2 and §3 written out again, plainly, with torch primitives only.

Nothing here comes from eidsl's ops: this is the independent computation the
compiled networks are compared with. The choices that matter are the reference
implementation's: the Heaviside forward with a sigmoid surrogate (alpha = 4),
the reset detached, the divisor's zeros replaced by the sample's smallest
positive entry with an identity backward, and W_EI's gradient divided by d by a
hook on the tensor (as the reference registers it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def heaviside_sigmoid(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    """Forward: [x >= 0]. Backward: d/dx sigmoid(alpha x)."""
    sg = torch.sigmoid(alpha * x)
    return (x >= 0).to(x.dtype) + (sg - sg.detach())


def lif_step(v, current, tau=2.0, theta=1.0, alpha=4.0):
    v = v * (1.0 - 1.0 / tau) + current
    s = heaviside_sigmoid(v - theta, alpha)
    return v - theta * s.detach(), s


def lif(current: torch.Tensor, T: int, **kw) -> torch.Tensor:
    seq = current.reshape(T, current.shape[0] // T, *current.shape[1:])
    v, spikes = torch.zeros_like(seq[0]), []
    for t in range(T):
        v, s = lif_step(v, seq[t], **kw)
        spikes.append(s)
    return torch.cat(spikes)


def grad_divided(w: torch.Tensor, d: int) -> torch.Tensor:
    """A copy of `w` whose gradient reaches `w` divided by d (the reference's tensor hook)."""
    leaf = w.detach().clone().requires_grad_(True)
    leaf.register_hook(lambda g: g / d)
    return leaf


def min_positive_ste(I_div: torch.Tensor) -> torch.Tensor:
    """Zeros -> the smallest positive entry of the same row (sample at one time step), identity backward."""
    rows = I_div.detach().reshape(I_div.shape[0], -1)
    smallest = torch.where(rows > 0, rows, torch.full_like(rows, math.inf)).min(dim=1).values
    replaced = torch.where(rows == 0, smallest[:, None].expand_as(rows), rows).reshape(I_div.shape)
    return I_div + (replaced - I_div).detach()


def over_channels(W: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """W (n_out, n_in) applied to the neuron axis (dense) or channel axis at every position (conv)."""
    if s.dim() == 2:
        return s @ W.t()
    return torch.einsum("oi,bihw->bohw", W, s)


def per_neuron(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v if like.dim() == 2 else v[:, None, None]


def feedforward(x, W, conv):
    if conv is None:
        return x @ W.t()
    return F.conv2d(x, W, stride=conv[0], padding=conv[1])


def ei_layer(x, P: dict, d: int, T: int, conv=None, W_EI=None):
    """One hidden E-I layer: currents, ReLU interneurons, shared W_EI, min-positive divisor, LIF."""
    I_EE, I_IE = feedforward(x, P["W_EE"], conv), feedforward(x, P["W_IE"], conv)
    s_I = torch.relu(I_IE)
    I_sub = over_channels(W_EI, s_I)
    I_div = over_channels(W_EI, s_I * per_neuron(P["g_I"], s_I))
    I_int = per_neuron(P["g_E"], I_EE) * (I_EE - I_sub) / min_positive_ste(I_div) + per_neuron(P["b_E"], I_EE)
    return lif(I_int, T)


def ei_output(x, P: dict, W_EI) -> torch.Tensor:
    """The output layer's balanced current I_EE - W_EI relu(I_IE)."""
    return x @ P["W_EE"].t() - over_channels(W_EI, torch.relu(x @ P["W_IE"].t()))


def readout(current: torch.Tensor, T: int) -> torch.Tensor:
    return current.reshape(T, -1, current.shape[-1]).mean(0)


def leaves(net, fan_in: dict[str, int]) -> dict[str, torch.Tensor]:
    """Detached copies of the network's parameters to feed these formulas, each gradient divided by
    its fan-in where `fan_in` names it (E-I Prop's W_EI / d)."""
    out = {}
    for name, p in net.named_parameters():
        leaf = p.detach().clone().requires_grad_(True)
        if name in fan_in:
            leaf.register_hook(lambda g, d=fan_in[name]: g / d)
        out[name] = leaf
    return out
