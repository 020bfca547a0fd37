"""The hand-derived Functions of compiler/fused.py against the straightforward autograd formulas.

The references below are written independently of compiler/ops.py: the spike is a Heaviside
whose backward is the derivative of a smooth primitive (sigmoid, arctan, ...), and every other
formula is docs/science.md §1.2/§3 as plain tensor arithmetic. Gradients are compared in float64,
where both sides are exact to ~1e-15, so a 1e-5 tolerance only hides nothing but rounding.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import eidsl
from eidsl_compiler import fused
from eidsl_compiler import ops
from conftest import SPECS

SURROGATES = ["sigmoid", "atan", "triangle", "rectangle"]


# ---------------------------------------------------------------- references


def primitive(x, kind, alpha):
    """A function whose derivative is the surrogate d spike / d v."""
    if kind == "sigmoid":
        return torch.sigmoid(alpha * x)
    if kind == "atan":
        return torch.atan(math.pi / 2 * alpha * x) / math.pi
    if kind == "triangle":
        c = x.clamp(-1 / alpha, 1 / alpha)
        return alpha * c - alpha * alpha / 2 * c * c.abs()
    if kind == "rectangle":
        return alpha * x.clamp(-0.5 / alpha, 0.5 / alpha)
    raise ValueError(kind)


def ref_spike(x, kind, alpha):
    p = primitive(x, kind, alpha)
    return (x >= 0).to(x.dtype) + (p - p.detach())


def ref_lif(current, T, tau=2.0, theta=1.0, reset="soft", v_reset=0.0, detach_reset=True,
            surrogate="sigmoid", alpha=4.0):
    seq = current.view(T, -1, *current.shape[1:])
    v = torch.zeros_like(seq[0])
    out = []
    for t in range(T):
        v = v * (1 - 1 / tau) + seq[t]
        s = ref_spike(v - theta, surrogate, alpha)
        r = s.detach() if detach_reset else s
        v = v - theta * r if reset == "soft" else r * v_reset + (1 - r) * v
        out.append(s)
    return torch.stack(out).flatten(0, 1)


def per_channel(v, like):
    return v.view(-1, *([1] * (like.dim() - 2)))


def ref_integrate(I_EE, I_sub, D, g_E, b_E):
    return per_channel(g_E, I_EE) * (I_EE - I_sub) / D + per_channel(b_E, I_EE)


def ref_min_positive_ste(I_div):
    rows = I_div.detach().flatten(1)
    smallest = torch.where(rows > 0, rows, torch.full_like(rows, math.inf)).amin(1, keepdim=True)
    replaced = torch.where(rows == 0, smallest, rows).view_as(I_div)
    return replaced + (I_div - I_div.detach())


def ref_inhibition(s_I, W, g_I):
    mix = (lambda s: s @ W.t()) if s_I.dim() == 2 else (lambda s: torch.einsum("oi,bihw->bohw", W, s))
    return mix(s_I), mix(s_I * per_channel(g_I, s_I))


# ---------------------------------------------------------------- helpers


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def grads_of(fn, inputs, seed=0):
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(loss, inputs)
    return outs, grads


def close(a, b, tol):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) <= tol


def assert_same(fn, ref, inputs, fwd_tol=1e-6, grad_tol=1e-5):
    got_out, got_grad = grads_of(fn, leaves(*inputs))
    want_out, want_grad = grads_of(ref, leaves(*inputs))
    for g, w in zip(got_out, want_out):
        assert close(g, w, fwd_tol)
    for i, (g, w) in enumerate(zip(got_grad, want_grad)):
        assert close(g, w, grad_tol), f"gradient of input {i}"


def currents(shape, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=dtype) * 1.2 + 0.6)


# ---------------------------------------------------------------- LIF


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("reset, detach_reset", [("soft", True), ("soft", False), ("hard", True), ("hard", False)])
def test_lif_matches_plain_autograd(surrogate, reset, detach_reset):
    T, x = 4, currents((4 * 3, 5, 6, 6))
    kw = dict(tau=2.0, theta=1.0, reset=reset, v_reset=-0.2, detach_reset=detach_reset, surrogate=surrogate,
              alpha=4.0 if surrogate != "atan" else 2.0)
    spikes = ref_lif(x, T, **kw)
    assert 0.1 < float(spikes.mean()) < 0.9          # the test exercises both branches of the spike
    assert_same(lambda c: fused.LIF.apply(c, T, *kw.values()), lambda c: ref_lif(c, T, **kw), [x])


def test_lif_other_tau_and_theta_dense():
    T, x = 8, currents((8 * 4, 37), seed=1)
    kw = dict(tau=3.0, theta=0.7, reset="soft", v_reset=0.0, detach_reset=True, surrogate="sigmoid", alpha=4.0)
    assert_same(lambda c: fused.LIF.apply(c, T, *kw.values()), lambda c: ref_lif(c, T, **kw), [x])


def test_lif_float32_spikes_identical_at_tau_2():
    x = currents((4 * 16, 8, 8, 8), seed=2, dtype=torch.float32)
    assert torch.equal(fused.LIF.apply(x, 4, 2.0, 1.0, "soft", 0.0, True, "sigmoid", 4.0), ref_lif(x, 4))


def test_lif_saves_only_the_membrane():
    x = currents((4 * 2, 3, 4, 4)).requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused.LIF.apply(x, 4, 2.0, 1.0, "soft", 0.0, True, "sigmoid", 4.0)
    assert [t.shape for t in saved] == [x.shape]


def test_lif_keeps_channels_last():
    x = currents((4 * 2, 8, 5, 5)).contiguous(memory_format=torch.channels_last)
    s = fused.LIF.apply(x, 4, 2.0, 1.0, "soft", 0.0, True, "sigmoid", 4.0)
    assert s.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(s, ref_lif(x, 4))


# ---------------------------------------------------------------- integration and stabilisation


@pytest.mark.parametrize("shape", [(12, 6), (8, 6, 3, 3)])
def test_integrate_matches_plain_autograd(shape):
    gen = torch.Generator().manual_seed(3)
    I_EE, I_sub = torch.rand(shape, generator=gen, dtype=torch.float64), torch.rand(shape, generator=gen, dtype=torch.float64)
    D = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1
    g_E, b_E = torch.rand(shape[1], dtype=torch.float64) + 0.5, torch.randn(shape[1], dtype=torch.float64)
    assert_same(fused.Integrate.apply, ref_integrate, [I_EE, I_sub, D, g_E, b_E])


def test_integrate_saves_two_full_tensors():
    xs = leaves(*(torch.rand(8, 6, 3, 3) for _ in range(3)), torch.rand(6), torch.rand(6))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused.Integrate.apply(*xs)
    assert sorted(t.numel() for t in saved) == [6, 8 * 6 * 9, 8 * 6 * 9]


def divisor_with_zeros(shape, seed=4):
    gen = torch.Generator().manual_seed(seed)
    D = torch.rand(shape, generator=gen, dtype=torch.float64)
    D[D < 0.3] = 0.0              # zeros scattered through every row
    D[1] = 0.0                    # a row without any positive entry: replaced by +inf
    return D


@pytest.mark.parametrize("shape", [(6, 10), (6, 4, 3, 3)])
def test_min_positive_ste_matches_reference(shape):
    D = divisor_with_zeros(shape)
    out = fused.MinPositiveSTE.apply(D)
    assert torch.equal(out, ref_min_positive_ste(D))
    assert torch.isinf(out[1]).all() and (out[0] > 0).all()
    x = D.clone().requires_grad_(True)
    (fused.MinPositiveSTE.apply(x) * torch.arange(D.numel(), dtype=D.dtype).view_as(D)).sum().backward()
    assert torch.equal(x.grad, torch.arange(D.numel(), dtype=D.dtype).view_as(D))


def test_stabilise_then_integrate_matches_reference_chain():
    shape = (6, 4, 3, 3)
    gen = torch.Generator().manual_seed(5)
    I_EE, I_sub = torch.rand(shape, generator=gen, dtype=torch.float64), torch.rand(shape, generator=gen, dtype=torch.float64)
    D = divisor_with_zeros(shape)
    D[1] = 0.5                    # keep the chain finite, so gradients can be compared
    g_E, b_E = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)

    def ours(a, s, d, g, b):
        return ops.integrate(a, s, ops.stabilise(d, "min_positive", True), g, b)

    def ref(a, s, d, g, b):
        return ref_integrate(a, s, ref_min_positive_ste(d), g, b)
    assert_same(ours, ref, [I_EE, I_sub, D, g_E, b_E])


def test_min_positive_without_ste_still_plain_autograd():
    D = divisor_with_zeros((5, 8))
    D[1] = 0.4
    x = D.clone().requires_grad_(True)
    ops.stabilise(x, "min_positive", False).sum().backward()
    # Without the STE, replaced zeros pass their gradient to the row's minimum, not to themselves.
    assert (x.grad[D == 0] == 0).all() and x.grad.sum() == pytest.approx(D.numel())


# ---------------------------------------------------------------- inhibition


@pytest.mark.parametrize("shape", [(10, 3), (4, 3, 5, 5), (4, 3, 2, 2), (4, 3, 3, 5)])
def test_inhibition_matches_plain_autograd(shape):       # 25 positions: one product per sample; 4, 15: over all rows
    gen = torch.Generator().manual_seed(6)
    s_I = torch.relu(torch.randn(shape, generator=gen, dtype=torch.float64))
    W = torch.rand(7, shape[1], generator=gen, dtype=torch.float64)
    g_I = torch.rand(shape[1], generator=gen, dtype=torch.float64) + 0.2
    assert_same(fused.Inhibition.apply, ref_inhibition, [s_I, W, g_I])


@pytest.mark.parametrize("positions", [(2, 2), (3, 5), (5, 5), (1, 1)])
def test_inhibition_products_are_dense_in_the_input_layout(positions):
    gen = torch.Generator().manual_seed(3)
    W, s, g = (torch.rand(*shape, generator=gen, dtype=torch.float64) for shape in
               ((6, 3), (4, 3, *positions), (4, 6, *positions)))
    out = fused.pointwise(W, s)
    gs, gw = fused.pointwise_backward(g, s, W, True, True)
    assert out.is_contiguous() and gs.is_contiguous()
    assert torch.allclose(out, torch.einsum("ek,nkhw->nehw", W, s), rtol=1e-12)
    assert torch.allclose(gs, torch.einsum("ek,nehw->nkhw", W, g), rtol=1e-12)
    assert torch.allclose(gw, torch.einsum("nehw,nkhw->ek", g, s), rtol=1e-12)


def test_inhibition_saves_s_I_not_the_stacked_input():
    s_I, W, g = leaves(torch.rand(4, 3, 5, 5), torch.rand(7, 3), torch.rand(3))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused.Inhibition.apply(s_I, W, g)
    assert max(t.numel() for t in saved) == s_I.numel()


# ---------------------------------------------------------------- whole networks


@pytest.mark.parametrize("spec, params, shape", [("mlp.ei", {"depth": 4}, (1, 28, 28)),
                                                  ("vgg.ei", {"T": 2}, (3, 32, 32))])
def test_network_fused_equals_plain(spec, params, shape):
    net = eidsl.build(SPECS / spec, **params)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(7))
    eidsl.ei_init(net, x)
    net, x = net.double(), x[:1].double()
    y = torch.tensor([1])
    results = []
    for enabled in (True, False):
        net.zero_grad()
        with ops.use_fused(enabled):
            logits = net(x)
            F.cross_entropy(logits, y).backward()
        results.append((logits.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
    (l1, g1), (l0, g0) = results
    assert close(l1, l0, 1e-12) and len(g1) == len(g0) > 0
    assert all(close(a, b, 1e-9) for a, b in zip(g1, g0))


# ---------------------------------------------------------------- the fused circuit and projection


def ref_circuit(I_EE, s_I, W, g_I, g_E, b_E):
    I_sub, I_div = ref_inhibition(s_I, W, g_I)
    return ref_integrate(I_EE, I_sub, ref_min_positive_ste(I_div), g_E, b_E)


# Positions per sample pick the W_EI products' layout: 4 (one product over all rows), 25 (one per
# sample; weight gradient over all rows), 64 (one per sample throughout); channels-last its own.
@pytest.mark.parametrize("shape_E, shape_I, channels_last", [
    ((10, 8), (10, 2), False), ((4, 8, 5, 5), (4, 2, 5, 5), False), ((4, 8, 2, 2), (4, 2, 2, 2), False),
    ((2, 8, 8, 8), (2, 2, 8, 8), False), ((4, 8, 5, 5), (4, 2, 5, 5), True)])
def test_circuit_matches_plain_autograd(shape_E, shape_I, channels_last):
    gen = torch.Generator().manual_seed(8)
    rand = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    s_I = torch.relu(torch.randn(shape_I, generator=gen, dtype=torch.float64))
    s_I[0] = 0.0                  # a silent sample: its divisor is all zeros, replaced by +inf
    s_I[1, :, ...] *= (rand(shape_I[1:]) > 0.5)     # scattered zeros: min-positive replacement
    args = [rand(shape_E), s_I, rand(8, 2), rand(2) + 0.3, rand(8) + 0.5, torch.randn(8, dtype=torch.float64)]
    if channels_last:
        args[:2] = [t.contiguous(memory_format=torch.channels_last) for t in args[:2]]
    assert_same(fused.Circuit.apply, ref_circuit, args)


def test_circuit_saves_a_and_s_I_only():
    args = leaves(torch.rand(4, 8, 5, 5), torch.rand(4, 2, 5, 5), torch.rand(8, 2), torch.rand(2), torch.rand(8),
                  torch.rand(8))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fused.Circuit.apply(*args)
    assert sorted(t.numel() for t in saved)[-2:] == [4 * 2 * 25, 4 * 8 * 25]


@pytest.mark.parametrize("conv,size", [(True, 6), (True, 12), (False, 0)], ids=["conv-apart", "conv-concatenated", "dense"])
def test_project_matches_plain_autograd(conv, size):
    gen = torch.Generator().manual_seed(9)
    if conv:
        x = torch.rand(3, 4, size, size, generator=gen, dtype=torch.float64)
        # 4 x 3 x 3 weight entries per output channel against 3 x 3 x 3 output positions: apart; x 6 x 6: one conv
        assert fused.convs_apart(x, torch.empty(5, 4, 3, 3), 2, 1) == (size == 6)
        ws = [torch.rand(5, 4, 3, 3, generator=gen, dtype=torch.float64), torch.rand(2, 4, 3, 3, generator=gen, dtype=torch.float64)]
        ref = lambda x, a, b: (F.conv2d(x, a, stride=2, padding=1), F.conv2d(x, b, stride=2, padding=1))  # noqa: E731
    else:
        x = torch.rand(3, 7, generator=gen, dtype=torch.float64)
        ws = [torch.rand(5, 7, generator=gen, dtype=torch.float64), torch.rand(2, 7, generator=gen, dtype=torch.float64)]
        ref = lambda x, a, b: (x @ a.t(), x @ b.t())  # noqa: E731
    assert_same(lambda x, a, b: fused.Project.apply(x, conv, 2, 1, a, b), ref, [x, *ws])


def test_convs_apart_where_the_weights_outweigh_the_output():
    w = lambda n_out, n_in: torch.empty(n_out, n_in, 3, 3)  # noqa: E731
    assert fused.convs_apart(torch.empty(64, 256, 4, 4), w(512, 256), 1, 1)        # VGG-8, 4x4: 2304 >= 1024
    assert fused.convs_apart(torch.empty(16, 256, 8, 8), w(512, 256), 2, 1)        # ResNet-18 stage 4 entry: 4x4 out
    assert not fused.convs_apart(torch.empty(64, 128, 8, 8), w(256, 128), 1, 1)    # 1152 < 4096
    assert not fused.convs_apart(torch.empty(64, 3, 32, 32), w(64, 3), 1, 1)


@pytest.mark.parametrize("size", [4, 12], ids=["apart", "concatenated"])
def test_fused_projection_equals_the_traced_formulas_bit_for_bit(size):
    """The compiled network traces ops.project's plain formulas: the fused projection must give
    the same values and gradients to the last bit, on both sides of convs_apart."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 8, size, size, generator=gen).requires_grad_()
    ws = [torch.rand(6, 8, 3, 3, generator=gen).requires_grad_(), torch.rand(2, 8, 3, 3, generator=gen).requires_grad_()]
    results = []
    for enabled in (True, False):
        with ops.use_fused(enabled):
            outs = ops.project(x, ws, [None, None], "conv", 1, 1)
        grads = torch.autograd.grad(outs, [x, *ws], [torch.ones_like(o) for o in outs])
        results.append(([o.detach() for o in outs], grads))
    (fo, fg), (po, pg) = results
    assert all(torch.equal(a, b) for a, b in zip(fo, po))
    assert all(torch.equal(a, b) for a, b in zip(fg, pg))



def _circuit_lif_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return leaves(torch.rand(6, 8, 3, 3, generator=gen) * 2, torch.rand(6, 2, 3, 3, generator=gen),
                  torch.rand(8, 2, generator=gen), torch.rand(2, generator=gen) + 0.5,
                  torch.rand(8, generator=gen) + 0.5, torch.rand(8, generator=gen))


NEURON = (2, 2.0, 1.0, "soft", 0.0, True, "sigmoid", 4.0)


def test_circuit_lif_keeps_a_and_s_I_not_the_membrane_and_frees_a_mid_backward(monkeypatch):
    """The step's peak is in a layer's backward: the membrane is recomputed there instead of kept for
    the whole step, and a is dropped once the integration's backward has read it (each E-sized tensor
    is 16.8 MB in VGG-8's first layer)."""
    import weakref
    inputs = _circuit_lif_inputs()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        spikes = fused.CircuitLIF.apply(*inputs, *NEURON)
    assert all(any(t is x for x in inputs) for t in saved)         # parameters and s_I: nothing new
    node = spikes.grad_fn
    assert node.a.shape == inputs[0].shape and not hasattr(node, "h")
    a = weakref.ref(node.a)
    seen = {}
    inhibition = fused._inhibition_backward

    def spy(*args):
        seen["a alive"] = a() is not None
        return inhibition(*args)
    monkeypatch.setattr(fused, "_inhibition_backward", spy)
    spikes.sum().backward()
    assert seen == {"a alive": False}


def test_circuit_lif_backward_twice_with_a_kept_graph():
    inputs = _circuit_lif_inputs()
    spikes = fused.CircuitLIF.apply(*inputs, *NEURON)
    g = torch.randn(spikes.shape, generator=torch.Generator().manual_seed(1))
    first = torch.autograd.grad(spikes, inputs, g, retain_graph=True)
    second = torch.autograd.grad(spikes, inputs, g)
    for x, y in zip(first, second):
        assert torch.equal(x, y)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):   # torch's own message
        torch.autograd.grad(spikes, inputs, g)
