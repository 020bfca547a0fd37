"""Hand-derived forward/backward pairs for the elementwise math of an E-I layer.

Plain autograd records every intermediate of the circuit and of each LIF time
step, and replays one kernel per recorded op in the backward pass. These
Functions compute the same values (the straightforward formulas live in
tests/compiler/test_fused.py as the reference) in fewer passes over memory, and save only
what their backward needs:

    LIF             saves the membrane before the spike, h (one tensor over T)
    Circuit         the paper's whole layer (inhibition, min-positive STE, integration):
                    saves a = I_EE - I_sub and s_I, recomputes the divisor in the backward
    CircuitLIF      Circuit followed by the E population's LIF, as one op (saves a, s_I; recomputes h)
    Project         the fused E->E/E->I product: saves the input, not the concatenated weight
    integrate       saves a and the stabilised divisor      } the same pieces one by one, for
    min-positive    saves nothing (identity backward: STE)  } circuits other than the paper's
    inhibition      saves s_I                               } (and for generated code)

Each eager backward rounds as autograd's formulas do, so the eager code and the plain formulas
agree bit for bit or to ~1e-7; the generated code calls the same ops as the runtime.

The elementwise parts run as compiled kernels (kernels.py) when those are active, and as the
in-place eager code here otherwise; both give the same values to float rounding.

Everything is device- and layout-agnostic (no host synchronisation, no
data-dependent Python branch, channels-last tensors stay channels-last).
Under torch.compile the plain formulas are traced instead (see ops.py): the
compiler fuses them itself and picks what to save.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd import Function

from eidsl_compiler import kernels


channels = kernels.channels


def _sum_to_channels(x: torch.Tensor) -> torch.Tensor:
    return x.sum([d for d in range(x.dim()) if d != 1])


# ---------------------------------------------------------------- LIF over T


def surrogate_from_membrane(h: torch.Tensor, theta: float, kind: str, alpha: float) -> torch.Tensor:
    """d spike / d h at every entry, as a new tensor, computed in place on one buffer."""
    x = torch.sub(h, theta)
    if kind == "sigmoid":                     # alpha * y * (1 - y), rounded as ops.surrogate_grad does
        y = x.mul_(alpha).sigmoid_()
        return torch.mul(y, alpha).mul_(y.neg_().add_(1.0))
    if kind == "atan":
        return x.mul_(math.pi / 2 * alpha).square_().add_(1.0).reciprocal_().mul_(alpha / 2)
    if kind == "triangle":
        return x.abs_().mul_(-alpha * alpha).add_(alpha).clamp_(min=0)
    if kind == "rectangle":
        return x.abs_().lt_(0.5 / alpha).mul_(alpha)
    raise ValueError(f"unknown surrogate {kind!r}")


def lif_forward(current: torch.Tensor, T: int, decay: float, theta: float, soft: bool,
                v_reset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and the membrane h before each spike, both folded (T*B, ...)."""
    seq = current.view(T, current.shape[0] // T, *current.shape[1:])
    h = torch.empty_like(seq)
    spikes = torch.empty_like(seq)
    v = None
    for t in range(T):
        if v is None:
            h[t].copy_(seq[t])
        else:
            torch.add(seq[t], v, alpha=decay, out=h[t])
        torch.ge(h[t], theta, out=spikes[t])
        if t + 1 < T:
            v = torch.sub(h[t], spikes[t], alpha=theta) if soft else \
                torch.where(spikes[t].bool(), v_reset, h[t])
    return spikes.flatten(0, 1), h.flatten(0, 1)


def lif_backward(grad: torch.Tensor, h: torch.Tensor, T: int, decay: float, theta: float, soft: bool,
                 v_reset: float, detach_reset: bool, surrogate: str, alpha: float) -> torch.Tensor:
    """dL/d current from dL/d spikes: g_t = dL/ds_t * s'(h_t) + decay * g_{t+1} * dv_t/dh_t."""
    sg = surrogate_from_membrane(h, theta, surrogate, alpha)
    plain = soft and detach_reset                      # dv/dh = 1: the common case, no extra tensor
    g = sg.mul_(grad) if plain else torch.mul(sg, grad)
    gs = g.view(T, g.shape[0] // T, *g.shape[1:])
    if plain:
        for t in range(T - 2, -1, -1):
            gs[t].add_(gs[t + 1] * decay)           # product, then sum: autograd's rounding
        return g
    hs = h.view_as(gs)
    sgs = sg.view_as(gs)
    for t in range(T - 2, -1, -1):
        if soft:                                       # v = h - theta s(h)
            dvdh = torch.mul(sgs[t], -theta).add_(1.0)
        else:                                          # v = s v_reset + (1 - s) h
            dvdh = (hs[t] < theta).to(h.dtype)
            if not detach_reset:
                dvdh = dvdh.add_(torch.sub(v_reset, hs[t]).mul_(sgs[t]))
        gs[t].addcmul_(gs[t + 1], dvdh, value=decay)
    return g


class LIF(Function):
    @staticmethod
    def forward(ctx, current, T, tau, theta, reset, v_reset, detach_reset, surrogate, alpha):
        decay, soft = 1.0 - 1.0 / tau, reset == "soft"
        run = kernels.lif_forward if kernels.active() else lif_forward
        spikes, h = run(current, T, decay, theta, soft, v_reset)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(h)
        ctx.cfg = (T, decay, theta, soft, v_reset, detach_reset, surrogate, alpha)
        return spikes

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        run = kernels.lif_backward if kernels.active() else lif_backward
        return (run(grad, h, *ctx.cfg),) + (None,) * 8


# ---------------------------------------------------------------- E-I integration


def _integrated(a, D, g_E, b_E):
    """I_int = g_E * a / D + b_E, in the reference's order of operations, in one new buffer: the
    backward's recomputation of the membrane calls it too, so it gets the forward's bits."""
    return torch.mul(a, channels(g_E, a)).div_(D).add_(channels(b_E, a))


class Integrate(Function):
    """I_int = g_E * (I_EE - I_sub) / D + b_E, in the reference's order of operations."""

    @staticmethod
    def forward(ctx, I_EE, I_sub, D, g_E, b_E):
        a = torch.sub(I_EE, I_sub)
        out = _integrated(a, D, g_E, b_E)
        ctx.save_for_backward(a, D, g_E)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, D, g_E = ctx.saved_tensors
        need = ctx.needs_input_grad
        g = channels(g_E, a)
        grad_b = _sum_to_channels(grad) if need[4] else None
        # The formulas and the rounding of autograd's Mul/Div/Sub backward, in fewer buffers.
        grad_D = torch.mul(a, g).div_(D).div_(D).mul_(grad).neg_() if need[2] else None
        r = torch.div(grad, D)                          # dL/d(g a)
        grad_EE = torch.mul(r, g) if need[0] else None
        grad_sub = torch.mul(r, -g) if need[1] else None
        grad_g = _sum_to_channels(r.mul_(a)) if need[3] else None
        return grad_EE, grad_sub, grad_D, grad_g, grad_b


# ---------------------------------------------------------------- E-I Prop's stabilisation


min_positive = kernels.min_positive


def min_positive_(I_div: torch.Tensor) -> torch.Tensor:
    """min_positive written into I_div's own buffer (for a temporary nobody else holds)."""
    dims = tuple(range(1, I_div.dim()))
    smallest = torch.where(I_div > 0, I_div, math.inf).amin(dims, keepdim=True)
    return torch.where(I_div == 0, smallest, I_div, out=I_div)


class MinPositiveSTE(Function):
    """Forward: min-positive replacement. Backward: the identity (E-I Prop's STE)."""

    @staticmethod
    def forward(ctx, I_div):
        return min_positive(I_div)

    @staticmethod
    def backward(ctx, grad):
        return grad


# ---------------------------------------------------------------- inhibition currents


def _channels_last(s: torch.Tensor) -> bool:
    return s.dim() == 4 and not s.is_contiguous() and s.is_contiguous(memory_format=torch.channels_last)


_FEW_POSITIONS = 16     # below this many positions per sample, the W_EI products run over all rows at once


def pointwise(W: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """W (n_out, n_in) applied over the neuron/channel axis, independently at each position.

    A matrix product, not a 1x1 convolution: oneDNN's 1x1 convolution is up to 10x slower on
    CPU for the few input channels of an inhibitory population (16 at VGG layer 1)."""
    if s.dim() == 2:
        return F.linear(s, W)
    if _channels_last(s):                               # (N, H, W, I) rows, output stays channels-last
        return F.linear(s.permute(0, 2, 3, 1), W).permute(0, 3, 1, 2)
    n, positions = s.shape[0], s.shape[2:].numel()
    if positions < _FEW_POSITIONS:
        # One product over all rows: a bmm of n products with a few columns each is ~2.7x slower
        # (VGG-8's 2x2 layer); the transposing copies are small at this size.
        rows = s.flatten(2).transpose(1, 2).reshape(-1, s.shape[1])
        out = (rows @ W.t()).view(n, positions, W.shape[0]).transpose(1, 2).contiguous()
        return out.view(n, W.shape[0], *s.shape[2:])
    # bmm with the weight broadcast over the batch: torch.matmul would compute the transposed
    # product and copy it back into NCHW order, a slow strided pass over an E-sized tensor.
    s_cols = s.flatten(2)
    return torch.bmm(W.expand(n, *W.shape), s_cols).view(n, W.shape[0], *s.shape[2:])


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *positions) -> (C, N * positions): every position of every sample as one column."""
    return t.flatten(2).transpose(0, 1).reshape(t.shape[1], -1)


def pointwise_input_grad(terms, shape) -> torch.Tensor:
    """sum_k alpha_k W_k^T g_k over the channel axis at each position, for `terms` of (W_k, g_k, alpha_k)
    with alpha_0 = 1: the gradient of the input s of the products W_k s. The products accumulate in one
    buffer (addmm/baddbmm), so a sum of them costs no elementwise pass."""
    (W, g, _), rest = terms[0], terms[1:]
    if g.dim() == 2:
        out = g @ W
        for W, g, alpha in rest:
            out.addmm_(g, W, alpha=alpha)
        return out
    if _channels_last(g):
        out = g.permute(0, 2, 3, 1) @ W                   # (N, H, W, I), channels-last once permuted back
        flat = out.view(-1, W.shape[1])
        for W, g, alpha in rest:
            flat.addmm_(g.permute(0, 2, 3, 1).reshape(-1, W.shape[0]), W, alpha=alpha)
        return out.permute(0, 3, 1, 2)
    n, positions = g.shape[0], g.shape[2:].numel()
    if positions < _FEW_POSITIONS:                      # as in pointwise: one product over all rows
        out = W.t() @ _rows(g)
        for W, g, alpha in rest:
            out.addmm_(W.t(), _rows(g), alpha=alpha)
        return out.view(W.shape[1], n, positions).transpose(0, 1).contiguous().view(shape)
    out = torch.bmm(W.t().expand(n, W.shape[1], W.shape[0]), g.flatten(2))
    for W, g, alpha in rest:
        out.baddbmm_(W.t().expand(n, W.shape[1], W.shape[0]), g.flatten(2), alpha=alpha)
    return out.view(shape)


def pointwise_weight_grad(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """sum over samples and positions of g s^T: the gradient of W in W s, shaped (n_out, n_in)."""
    if g.dim() == 2:
        return g.t() @ s
    if _channels_last(s) and _channels_last(g):
        return g.permute(0, 2, 3, 1).reshape(-1, g.shape[1]).t() @ s.permute(0, 2, 3, 1).reshape(-1, s.shape[1])
    if g.shape[2:].numel() >= 64:                       # many positions: one product per sample, summed
        return torch.bmm(g.flatten(2), s.flatten(2).transpose(1, 2)).sum(0)
    return _rows(g) @ _rows(s).t()                      # few: one product over all rows


def pointwise_backward(grad: torch.Tensor, s: torch.Tensor, W: torch.Tensor, need_s: bool, need_W: bool):
    # Under autocast the forward product ran in the gradient's (lower) precision: so does this one;
    # autograd casts each returned gradient back to its input's dtype.
    s, W = s.to(grad.dtype), W.to(grad.dtype)
    return (pointwise_input_grad([(W, grad, 1.0)], s.shape) if need_s else None,
            pointwise_weight_grad(grad, s) if need_W else None)


class Inhibition(Function):
    """(I_sub, I_div) = (W_EI s_I, W_EI (g_I * s_I)) as one batched product; saves s_I only."""

    @staticmethod
    def forward(ctx, s_I, W_EI, g_I):
        gated = s_I * channels(g_I, s_I)
        both = pointwise(W_EI, torch.cat([s_I, gated], 0))
        ctx.save_for_backward(s_I, W_EI, g_I)
        return tuple(both.chunk(2, 0))

    @staticmethod
    def backward(ctx, grad_sub, grad_div):
        s_I, W, g_I = ctx.saved_tensors
        need_s, need_W, need_g = ctx.needs_input_grad
        g = channels(g_I, s_I)
        gated = s_I * g
        gs_sub, gw_sub = pointwise_backward(grad_sub, s_I, W, need_s, need_W)
        gs_div, gw_div = pointwise_backward(grad_div, gated, W, need_s or need_g, need_W)
        grad_s = torch.addcmul(gs_sub, gs_div, g) if need_s else None
        grad_g = _sum_to_channels(gs_div.mul_(s_I)) if need_g else None
        grad_W = gw_sub.add_(gw_div) if need_W else None
        return grad_s, grad_W, grad_g


# ---------------------------------------------------------------- the whole circuit, saving a and s_I


def _circuit_forward(I_EE, s_I, W_EI, g_I, g_E, b_E):
    """(I_int, a) of the standard circuit; a = I_EE - I_sub is what the backward keeps."""
    D = pointwise(W_EI * g_I, s_I)
    if kernels.active():
        return kernels.circuit_forward(I_EE, pointwise(W_EI, s_I), D, g_E, b_E)
    # The two W_EI products one after the other, each E-sized buffer reused in place as soon as
    # it is consumed: the peak holds I_EE, a and D, never [I_sub; I_div].
    D = min_positive_(D)
    a = pointwise(W_EI, s_I)
    a = torch.sub(I_EE, a, out=a)
    return _integrated(a, D, g_E, b_E), a


def _recomputed_divisor(s_I, W, g_I, dtype):
    """(W_EI diag g_I) s_I again, before min-positive, in the forward's (autocast) dtype."""
    return pointwise((W * g_I).to(dtype), s_I.to(dtype))


def _integration_backward(grad, a, P_div, g_E, need_gE, need_b):
    """dL/dI_EE (= -dL/dI_sub), dL/dI_div through the straight-through divisor, dL/dg_E, dL/db_E.

    Eager: operation for operation the backward of Inhibition -> MinPositiveSTE -> Integrate
    (the generated code's path), each rounding as autograd does."""
    if kernels.active():
        return kernels.circuit_backward(grad, a, P_div, g_E)
    D = min_positive_(P_div)
    grad_b = _sum_to_channels(grad) if need_b else None
    ge = channels(g_E, a)
    grad_D = torch.mul(a, ge).div_(D).div_(D).mul_(grad).neg_()
    r = torch.div(grad, D)
    del D
    ga = torch.mul(r, ge)
    grad_gE = _sum_to_channels(r.mul_(a)) if need_gE else None
    return ga, grad_D, grad_gE, grad_b


def _inhibition_backward(ga, grad_D, s_I, W, g_I, need_s, need_W, need_gI):
    """dL/ds_I, dL/dW_EI, dL/dg_I from dL/dI_EE (= -dL/dI_sub) and dL/dI_div.

    With I_div = (W_EI diag g_I) s_I nothing of s_I's size is gated: dL/ds_I is one buffer that both
    W^T products accumulate into, and dL/dg_I comes from the weight-shaped product grad_D^T s_I
    (sum_e W_ei (grad_D^T s_I)_ei), not from an extra pass over an I-sized tensor. VGG-8's layer-1
    shapes: 7.5 -> 5.1 ms (the gated input, the separate product of each path and their sum gone)."""
    dt = ga.dtype                                      # lower than the weights' under autocast
    s = s_I.to(dt)
    grad_s = grad_W = grad_gI = None
    if need_s:
        grad_s = pointwise_input_grad([((W * g_I).to(dt), grad_D, 1.0), (W.to(dt), ga, -1.0)], s.shape)
    if need_W or need_gI:
        B = pointwise_weight_grad(grad_D, s)          # dL/d(W_EI diag g_I), before the chain through g_I
        if need_W:
            grad_W = torch.addcmul(pointwise_weight_grad(ga, s).neg_(), B, g_I)
        if need_gI:
            grad_gI = (W * B).sum(0)
    return grad_s, grad_W, grad_gI


class Circuit(Function):
    """The standard E-I layer (docs/science.md §1.2 items 2-5 with E-I Prop's min-positive STE):

        I_sub, I_div = W_EI s_I, W_EI (g_I s_I);   a = I_EE - I_sub
        I_int = g_E * a / min_positive(I_div) + b_E

    I_div is computed as (W_EI diag g_I) s_I: the same sum, with g_I folded into an n_E x n_I
    weight instead of a pass over s_I. It saves a and s_I only: the divisor is recomputed in the
    backward from s_I, which costs n_E*n_I multiply-adds per position and saves one full E-sized
    tensor per layer. The I->E gradients of both paths accumulate into one dL/ds_I buffer.
    """

    @staticmethod
    def forward(ctx, I_EE, s_I, W_EI, g_I, g_E, b_E):
        out, a = _circuit_forward(I_EE, s_I, W_EI, g_I, g_E, b_E)
        ctx.save_for_backward(a, s_I, W_EI, g_I, g_E)
        ctx.mixed_dtype = a.dtype                         # lower than the weights' under autocast
        return out

    @staticmethod
    def backward(ctx, grad):
        a, s_I, W, g_I, g_E = ctx.saved_tensors
        need_EE, need_s, need_W, need_gI, need_gE, need_b = ctx.needs_input_grad
        P_div = _recomputed_divisor(s_I, W, g_I, ctx.mixed_dtype)
        ga, grad_D, grad_gE, grad_b = _integration_backward(grad, a, P_div, g_E, need_gE, need_b)
        del P_div
        grad_s, grad_W, grad_gI = _inhibition_backward(ga, grad_D, s_I, W, g_I, need_s, need_W, need_gI)
        return (ga if need_EE else None), grad_s, grad_W, grad_gI, (grad_gE if need_gE else None), \
            (grad_b if need_b else None)


def _circuit_lif_forward(I_EE, s_I, W_EI, g_I, g_E, b_E, T, decay, theta, soft, v_reset):
    """(spikes, a) of the standard circuit followed by its E population's LIF."""
    if kernels.active():
        P_div = pointwise(W_EI * g_I, s_I)
        return kernels.circuit_lif_forward(I_EE, pointwise(W_EI, s_I), P_div, g_E, b_E, T, decay, theta, soft,
                                           v_reset)
    I_int, a = _circuit_forward(I_EE, s_I, W_EI, g_I, g_E, b_E)
    return lif_forward(I_int, T, decay, theta, soft, v_reset)[0], a


def _recomputed_membrane(a, D, g_E, b_E, cfg):
    """The forward's h from a and the stabilised divisor: the eager forward's ops, in its order."""
    return lif_forward(_integrated(a, D, g_E, b_E), *cfg[:5])[1]


def _circuit_lif_backward(grad, saved: dict, s_I, W, g_I, g_E, b_E, cfg, mixed_dtype, need):
    """dL/d(I_EE, s_I, W_EI, g_I, g_E, b_E) from dL/d spikes; `need` flags which to compute.

    The membrane h is not kept from the forward but recomputed from a and the recomputed divisor
    (the same formulas, so the same bits): one E-sized tensor less per layer for the whole step,
    and with the kernels it never exists at all (one pass: current, membrane, both backwards).
    `saved` holds a, popped here so that a is freed as soon as it has been read, and "owned": whether
    the caller passed the only reference (CircuitLIF, unless the graph is kept for another backward),
    so that a's buffer may be written over."""
    need_EE, need_s, need_W, need_gI, need_gE, need_b = need
    if kernels.active():
        ga, grad_D, grad_gE, grad_b = _kernel_backward(grad, saved, s_I, W, g_I, g_E, b_E, cfg, mixed_dtype)
    else:
        P_div = _recomputed_divisor(s_I, W, g_I, mixed_dtype)
        a = saved.pop("a")
        h = _recomputed_membrane(a, min_positive_(P_div), g_E, b_E, cfg)
        grad_int = lif_backward(grad, h, *cfg)
        del h
        ga, grad_D, grad_gE, grad_b = _integration_backward(grad_int, a, P_div, g_E, need_gE, need_b)
        del a, grad_int, P_div
    grad_s, grad_W, grad_gI = _inhibition_backward(ga, grad_D, s_I, W, g_I, need_s, need_W, need_gI)
    return ((ga if need_EE else None), grad_s, grad_W, grad_gI, (grad_gE if need_gE else None),
            (grad_b if need_b else None))


# E-sized tensors above this size run the backward kernel over groups of samples (below it, one call).
CHUNK_BYTES = 2 << 20


def _kernel_backward(grad, saved: dict, s_I, W, g_I, g_E, b_E, cfg, mixed_dtype):
    """The compiled backward of the layer: (dL/dI_EE, dL/dI_div, dL/dg_E, dL/db_E).

    One call holds, beside the incoming gradient and a, the recomputed divisor, the two outputs and
    one temporary of the kernel: six E-sized tensors, the step's peak in a large layer. Above
    CHUNK_BYTES the samples go through in groups instead (the rows of every time step for those
    samples, so each group is a whole LIF sequence): the divisor and the temporaries are a group's
    size, and dL/dI_EE is written into a's own buffer as each group of a is consumed (where the
    caller passed the only reference). VGG-8, batch 16, T = 4, first layer (16.8 MB per tensor):
    six tensors -> about four. The groups cost two copies in and out of each E-sized tensor."""
    a = saved.pop("a")
    T = cfg[0]
    n = a.shape[0] // T
    groups = min(n, -(-a.numel() * a.element_size() // CHUNK_BYTES))
    if groups <= 1:
        P_div = _recomputed_divisor(s_I, W, g_I, mixed_dtype)
        return kernels.circuit_lif_backward(grad, a, P_div, g_E, b_E, *cfg)
    ga = a if saved.get("owned") else torch.empty_like(a)
    grad_D = torch.empty_like(a)
    sums = None
    per_step = lambda x: x.unflatten(0, (T, n))      # noqa: E731
    size = -(-n // groups)
    for start in range(0, n, size):
        rows = slice(start, min(start + size, n))
        pick = lambda x: per_step(x)[:, rows].flatten(0, 1)     # noqa: E731  (a copy: not contiguous)
        P_div = _recomputed_divisor(pick(s_I), W, g_I, mixed_dtype)
        ga_rows, gD_rows, *group_sums = kernels.circuit_lif_backward(pick(grad), pick(a), P_div, g_E, b_E, *cfg)
        del P_div
        per_step(ga)[:, rows] = ga_rows.unflatten(0, (T, -1))
        per_step(grad_D)[:, rows] = gD_rows.unflatten(0, (T, -1))
        sums = group_sums if sums is None else [x + y for x, y in zip(sums, group_sums)]
    return ga, grad_D, *sums


def _keeps_graph() -> bool:
    """Whether the running backward keeps the graph (retain_graph=True): then what the layer saved
    must survive it. Private in torch, hence guarded; unknown counts as kept."""
    keep = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if keep is None else bool(keep())


def _lif_settings(T, tau, theta, reset, v_reset, detach_reset, surrogate, alpha):
    return T, 1.0 - 1.0 / tau, theta, reset == "soft", v_reset, detach_reset, surrogate, alpha


class CircuitLIF(Function):
    """The standard circuit followed by the LIF of the same E population, as one op.

    Same values as Circuit then LIF. It keeps a and s_I (as Circuit does), not the membrane:
    the backward recomputes h from a and the divisor it recomputes anyway. With the compiled
    kernels each direction is one pass over the layer: neither the integrated current nor the
    membrane ever exists as a tensor."""

    @staticmethod
    def forward(ctx, I_EE, s_I, W_EI, g_I, g_E, b_E, *neuron):
        cfg = _lif_settings(*neuron)
        spikes, a = _circuit_lif_forward(I_EE, s_I, W_EI, g_I, g_E, b_E, *cfg[:5])
        ctx.save_for_backward(s_I, W_EI, g_I, g_E, b_E)
        # a is the layer's own intermediate, neither input nor output, so it may live on ctx (no
        # reference cycle): the backward then drops it as soon as it is read, which a saved tensor
        # cannot do (it lives until the backward returns). In VGG-8's first layer it is 16.8 MB,
        # and the step's peak is there.
        ctx.a = a
        ctx.mixed_dtype = a.dtype
        ctx.cfg = cfg
        return spikes

    @staticmethod
    def backward(ctx, grad):
        s_I, W, g_I, g_E, b_E = ctx.saved_tensors
        saved = {"a": ctx.a, "owned": not _keeps_graph()}
        if saved["owned"]:
            del ctx.a
        grads = _circuit_lif_backward(grad, saved, s_I, W, g_I, g_E, b_E, ctx.cfg, ctx.mixed_dtype,
                                      ctx.needs_input_grad[:6])
        return grads + (None,) * 8


# The same layer as two custom ops, for torch.compile: the compiler sees one opaque call per
# direction (running the kernels above) instead of tracing the plain formulas, so the compiled
# network runs the eager layer code and fuses only what lies between layers; it also compiles
# less (the layer's formulas are not traced).

@torch.library.custom_op("eidsl::circuit_lif", mutates_args=())
def circuit_lif_op(I_EE: torch.Tensor, s_I: torch.Tensor, W_EI: torch.Tensor, g_I: torch.Tensor,
                   g_E: torch.Tensor, b_E: torch.Tensor, T: int, tau: float, theta: float, reset: str,
                   v_reset: float, detach_reset: bool, surrogate: str,
                   alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(spikes, a); a (with s_I) is what the backward needs."""
    cfg = _lif_settings(T, tau, theta, reset, v_reset, detach_reset, surrogate, alpha)
    return _circuit_lif_forward(I_EE, s_I, W_EI, g_I, g_E, b_E, *cfg[:5])


@circuit_lif_op.register_fake
def _(I_EE, s_I, W_EI, g_I, g_E, b_E, *neuron):
    return torch.empty_like(I_EE), torch.empty_like(I_EE)


@torch.library.custom_op("eidsl::circuit_lif_backward", mutates_args=())
def circuit_lif_backward_op(grad: torch.Tensor, a: torch.Tensor, s_I: torch.Tensor, W_EI: torch.Tensor,
                            g_I: torch.Tensor, g_E: torch.Tensor, b_E: torch.Tensor, T: int, tau: float,
                            theta: float, reset: str, v_reset: float, detach_reset: bool, surrogate: str,
                            alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor, torch.Tensor]:
    cfg = _lif_settings(T, tau, theta, reset, v_reset, detach_reset, surrogate, alpha)
    return _circuit_lif_backward(grad, {"a": a}, s_I, W_EI, g_I, g_E, b_E, cfg, a.dtype, (True,) * 6)


@circuit_lif_backward_op.register_fake
def _(grad, a, s_I, W_EI, g_I, g_E, b_E, *neuron):
    return (torch.empty_like(a), torch.empty_like(s_I), torch.empty_like(W_EI), torch.empty_like(g_I),
            torch.empty_like(g_E), torch.empty_like(g_E))


def _save_for_circuit_lif_backward(ctx, inputs, output):
    _, s_I, W_EI, g_I, g_E, b_E, *neuron = inputs
    _, a = output
    ctx.save_for_backward(a, s_I, W_EI, g_I, g_E, b_E)
    ctx.neuron = neuron


def _circuit_lif_op_backward(ctx, grad, grad_a):
    a, s_I, W_EI, g_I, g_E, b_E = ctx.saved_tensors
    return (*circuit_lif_backward_op(grad, a, s_I, W_EI, g_I, g_E, b_E, *ctx.neuron),) + (None,) * 8


circuit_lif_op.register_autograd(_circuit_lif_op_backward, setup_context=_save_for_circuit_lif_backward)


# ---------------------------------------------------------------- fused projection, weights not copied into the graph


def convs_apart(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> bool:
    """Whether a fused projection runs one convolution per weight instead of one with the
    concatenated weight: where a weight holds at least as many entries per output channel as the
    output has positions (VGG-8 from 256 -> 512 at 4x4, ResNet-18's last stage), concatenating the
    weights (forward) and the weights and gradients (input gradient) costs more than the one call
    saves. Per layer (ms, one -> apart): VGG-8 512 -> 512 + 128 at 2x2 forward 10.2 -> 9.2, input
    gradient 10.7 -> 7.1; ResNet-18 512 -> 512 + 128 at 4x4 10.2 -> 9.1 and 11.6 -> 8.6. Below
    that size the single call is as fast or faster (up to 11 %)."""
    k = weight.shape[2:].numel()
    out_positions = 1
    for size, kernel_size in zip(x.shape[2:], weight.shape[2:]):
        out_positions *= (size + 2 * padding - kernel_size) // stride + 1
    return weight.shape[1] * k >= x.shape[0] * out_positions


class Project(Function):
    """x -> [W_1 x, W_2 x, ...]: convolutions as one conv with the concatenated weight (output
    split), or one conv per weight where the weights outweigh the output (`convs_apart`); matmuls
    one per weight.

    A convolution's concatenated weight is not kept from the forward (the backward rebuilds it),
    so the saved state is the input and the parameters themselves."""

    @staticmethod
    def forward(ctx, x, conv, stride, padding, *weights):
        ctx.save_for_backward(x, *weights)
        ctx.geometry = (conv, stride, padding)
        if not conv:
            # One matmul per weight: no concatenated copy of the weights, each output dense (the
            # split of one product has rows of n_E + n_I), and ~25 % faster than one product with
            # n_E + n_I outputs (MLP-8 shapes); every output entry is the same dot product.
            return tuple(F.linear(x, w) for w in weights)
        if convs_apart(x, weights[0], stride, padding):
            return tuple(F.conv2d(x, w, None, stride, padding) for w in weights)
        out = F.conv2d(x, torch.cat(weights, 0), None, stride, padding)
        return tuple(out.split([w.shape[0] for w in weights], 1))

    @staticmethod
    def backward(ctx, *grads):
        x, *weights = ctx.saved_tensors
        conv, stride, padding = ctx.geometry
        need_x, need_ws = ctx.needs_input_grad[0], ctx.needs_input_grad[4:]
        # One product with the whole weight and gradient, as plain autograd does: the gradients stay
        # bit-identical to the unfused path (a split product would sum in another order).
        dt = grads[0].dtype                              # the product's dtype (lower under autocast)
        x, weights = x.to(dt), [w.to(dt) for w in weights]
        if conv:
            # The input gradient with the whole weight and gradient, as plain autograd computes it
            # (a split product would sum in another order); the concatenated gradient and weight
            # die before the weight gradients are made, part by part, from the separate gradients.
            # (One weight-gradient call on the concatenation is no faster here and keeps an
            # (n_E + n_I)-channel gradient alive: +10 MB at VGG-8's peak.)
            geometry = ([stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1)
            gx = None
            if need_x and convs_apart(x, weights[0], stride, padding):   # autograd's sum for separate convs
                for g, w in zip(grads, weights):
                    part = torch.ops.aten.convolution_backward(g, x, w, None, *geometry, [True, False, False])[0]
                    gx = part if gx is None else gx + part
            elif need_x:
                gx = torch.ops.aten.convolution_backward(torch.cat(grads, 1), x, torch.cat(weights, 0), None,
                                                         *geometry, [True, False, False])[0]
            gws = [torch.ops.aten.convolution_backward(g, x, w, None, *geometry, [False, True, False])[1] if need
                   else None for g, w, need in zip(grads, weights, need_ws)]
            return (gx, None, None, None, *gws)
        # Matmuls: the products of autograd's backward of one linear per weight, summed as autograd
        # sums them, so the compiled network (which traces ops.project) agrees to the last bit.
        gx = None
        if need_x:
            for g, w in zip(grads, weights):
                gx = g @ w if gx is None else gx + g @ w
        rows = x.reshape(-1, x.shape[-1])
        gws = [g.reshape(-1, g.shape[-1]).t() @ rows if need else None for g, need in zip(grads, need_ws)]
        return (gx, None, None, None, *gws)
