"""The compiled networks against the paper's formulas (docs/science.md §1.2, §2.2, §3, §3.1).

Gradients are compared in float64 with tests/paper_math.py, an independent plain
autograd version of the same equations; in float64 the two differ only by the
order of floating-point operations, far too little to move a spike.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import eidsl
from eidsl_compiler import ops

import paper_math as pm
from conftest import SPECS

CONV_NET = """
import "std"
network small_conv(T = 3) {
    h = %s([2, 8, 8])
    h = ei_layer(h, 8, op = "conv")
    h = avgpool(h, 2)
    h = ei_layer(h, 8, op = "conv", stride = 2)
    return readout(ei_readout(flatten(h), 4))
}
"""


def layer(scope: str, out: str = "E") -> dict[str, str]:
    return {"W_EE": f"{scope}.{out}.W_EE", "W_IE": f"{scope}.I.W_IE", "W_EI": f"{scope}.{out}.W_EI",
            "g_I": f"{scope}.I.g_I", "g_E": f"{scope}.{out}.g_E", "b_E": f"{scope}.{out}.b_E"}


def perturb(net, gen, silent_row: str | None = None) -> None:
    """Move gains, biases and W_EI off their initial constants so every gradient term matters."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".g_E"):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
            elif name.endswith(".b_E"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif name.endswith(".W_EI"):
                p.mul_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)
        if silent_row:
            # An E neuron with no inhibitory input: its I_div is exactly 0 and gets the sample's min-positive.
            net.get_parameter(silent_row)[0].zero_()


def assert_same_gradients(net, ref: dict[str, torch.Tensor], expected_used: int) -> None:
    used = 0
    for name, p in net.named_parameters():
        theirs = ref[name].grad
        if p.grad is None or theirs is None:
            assert p.grad is None and theirs is None, name
            continue
        torch.testing.assert_close(p.grad, theirs, rtol=1e-9, atol=1e-12, msg=name)
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient, the comparison would prove nothing"
        used += 1
    assert used == expected_used     # 6 per hidden layer, W_EE, W_IE, W_EI for the output layer


def test_mlp_gradients_match_the_paper_formulas():
    T, B = 3, 6
    net = eidsl.build(SPECS / "mlp.ei", paper=True, depth=2, input=[1, 8, 8], T=T).double()
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(B, 1, 8, 8, generator=gen, dtype=torch.float64) > 0.6).double()
    x[0] = 0                                     # silent sample: its I_div row is all zero -> +inf -> I_int = b_E
    eidsl.ei_init(net, x[1:])
    perturb(net, gen, silent_row="layer_1.E.W_EI")
    labels = torch.randint(0, 10, (B,), generator=gen)

    F.cross_entropy(net(x), labels).backward()

    P = pm.leaves(net, {"layer_1.E.W_EI": 64, "classifier_1.O.W_EI": 500})
    h = x.flatten(1).repeat(T, 1)
    L1 = {k: P[v] for k, v in layer("layer_1").items()}
    s = pm.ei_layer(h, L1, 64, T, W_EI=L1["W_EI"])
    O = {k: P[v] for k, v in layer("classifier_1", "O").items()}
    logits = pm.readout(pm.ei_output(s, O, O["W_EI"]), T)
    F.cross_entropy(logits, labels).backward()

    torch.testing.assert_close(net(x), logits.detach(), rtol=1e-12, atol=1e-12)
    assert_same_gradients(net, P, 6 + 3)
    assert P["classifier_1.O.g_E"].grad is None          # the output layer has no division, gain or bias
    assert 0 < s.detach().mean() < 1


def test_conv_gradients_match_the_paper_formulas(tmp_path):
    T, B = 3, 4
    spec = tmp_path / "small_conv.ei"
    spec.write_text(CONV_NET % "image")
    net = eidsl.build(spec).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(B, 2, 8, 8, generator=gen, dtype=torch.float64)
    x[1, :, :5, :5] = 0                      # silent receptive fields: I_div = 0 at some positions
    x[2] = 0
    eidsl.ei_init(net, x)
    perturb(net, gen)
    labels = torch.randint(0, 4, (B,), generator=gen)
    F.cross_entropy(net(x), labels).backward()

    fan = {"ei_layer_1.E.W_EI": 18, "ei_layer_2.E.W_EI": 72, "ei_readout_1.O.W_EI": 32}
    P = pm.leaves(net, fan)
    h = x.repeat(T, 1, 1, 1)
    L1 = {k: P[v] for k, v in layer("ei_layer_1").items()}
    s1 = pm.ei_layer(h, L1, 18, T, conv=(1, 1), W_EI=L1["W_EI"])
    L2 = {k: P[v] for k, v in layer("ei_layer_2").items()}
    s2 = pm.ei_layer(F.avg_pool2d(s1, 2), L2, 72, T, conv=(2, 1), W_EI=L2["W_EI"])
    O = {k: P[v] for k, v in layer("ei_readout_1", "O").items()}
    logits = pm.readout(pm.ei_output(s2.flatten(1), O, O["W_EI"]), T)
    F.cross_entropy(logits, labels).backward()

    torch.testing.assert_close(net(x), logits.detach(), rtol=1e-12, atol=1e-12)
    assert_same_gradients(net, P, 6 + 6 + 3)
    env = net.run(x, keep=True)
    s_I = env["ei_layer_1.I"]
    g_I = net.get_parameter("ei_layer_1.I.g_I")[:, None, None]
    I_div = pm.over_channels(net.get_parameter("ei_layer_1.E.W_EI"), s_I * g_I)
    zeros = (I_div == 0).flatten(1)
    assert zeros.any(1)[~zeros.all(1)].any(), "no partial zeros: min-positive replacement untested"


# ---------------------------------------------------------------- E-I Init (docs/science.md §2.2)


def exact_rate_batch(n: int, d: int, p: float, gen) -> torch.Tensor:
    """Binary rows whose every column fires in exactly round(p n) rows."""
    k = round(p * n)
    cols = [torch.randperm(n, generator=gen)[:k] for _ in range(d)]
    x = torch.zeros(n, d)
    for j, rows in enumerate(cols):
        x[rows, j] = 1
    return x


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_ei_init_binary_inputs_closed_forms(p):
    T, B, d = 4, 200, 256
    net = eidsl.build(SPECS / "mlp.ei", paper=True, depth=2, input=[1, 16, 16], T=T)
    x = exact_rate_batch(B, d, p, torch.Generator().manual_seed(2)).view(B, 1, 16, 16)
    scales = eidsl.ei_init(net, x, seed=7)

    sigma_closed = math.sqrt((1 - p) / (d * (2 - p)))
    gain_closed = math.sqrt((2 - p) / (d * p))
    # The statistics use the unbiased per-feature variance over the T*B rows: N/(N-1) p(1-p).
    N = T * B
    var = N / (N - 1) * p * (1 - p)
    assert scales["layer_1.E.W_EE"] == pytest.approx(math.sqrt(var / (d * (p + var))), rel=1e-9)
    assert scales["layer_1.E.W_EE"] == pytest.approx(sigma_closed, rel=1e-3)
    assert scales["layer_1.I.W_IE"] == scales["layer_1.E.W_EE"]
    g_I = net.get_parameter("layer_1.I.g_I")
    assert torch.allclose(g_I, torch.full_like(g_I, math.sqrt(p + var) / (math.sqrt(d) * p)), rtol=1e-6)
    assert g_I[0].item() == pytest.approx(gain_closed, rel=1e-3)

    W = net.get_parameter("layer_1.E.W_EE").detach().double()
    assert W.min() >= 0
    assert W.mean().item() == pytest.approx(sigma_closed, rel=0.02)     # Exponential: mean = scale
    assert W.std().item() == pytest.approx(sigma_closed, rel=0.03)      # ... and std = scale
    assert torch.equal(net.get_parameter("layer_1.E.W_EI"), torch.full((500, 125), 1 / 125))
    assert torch.equal(net.get_parameter("layer_1.E.g_E"), torch.ones(500))
    assert torch.equal(net.get_parameter("layer_1.E.b_E"), torch.zeros(500))


def statistics(x: torch.Tensor) -> tuple[float, float, float]:
    x = x.detach().double().flatten(1)
    return x.mean().item(), (x * x).mean().item(), x.var(0, unbiased=True).mean().item()


def test_ei_init_real_valued_inputs_layer_by_layer():
    T, B, d = 4, 16, 256
    net = eidsl.build(SPECS / "mlp.ei", paper=True, depth=2, input=[1, 16, 16], T=T)
    x = torch.rand(B, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    scales = eidsl.ei_init(net, x)

    m, m2, v = statistics(x.flatten(1).repeat(T, 1))
    assert scales["layer_1.E.W_EE"] == pytest.approx(math.sqrt(v / (d * (m2 + v))), rel=1e-9)
    assert net.get_parameter("layer_1.I.g_I")[0].item() == pytest.approx(math.sqrt(m2 + v) / (math.sqrt(d) * m),
                                                                          rel=1e-6)
    # The readout is initialised on what the initialised first layer actually emits.
    spikes = net.run(x, keep=True)["layer_1.E"]
    m, m2, v = statistics(spikes)
    assert 0 < m < 1
    assert scales["classifier_1.O.W_EE"] == pytest.approx(math.sqrt(v / (500 * (m2 + v))), rel=1e-9)
    assert net.get_parameter("classifier_1.I.g_I")[0].item() == pytest.approx(
        math.sqrt(m2 + v) / (math.sqrt(500) * m), rel=1e-6)


# ---------------------------------------------------------------- E-I Prop pieces (docs/science.md §3)


def test_min_positive_replacement_per_sample_row():
    I_div = torch.tensor([[0.0, 2.0, 3.0], [0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    out = ops.min_positive(I_div)
    inf = math.inf
    assert torch.equal(out, torch.tensor([[2.0, 2.0, 3.0], [5.0, 5.0, 5.0], [inf, inf, inf], [1.0, 2.0, 3.0]]))
    # Conv layout: the minimum is over every channel and position of one sample.
    conv = torch.zeros(2, 2, 2, 2)
    conv[0, 1, 1, 0] = 0.25
    conv[0, 0, 0, 1] = 4.0
    expected = torch.tensor([[[0.25, 4.0], [0.25, 0.25]], [[0.25, 0.25], [0.25, 0.25]]])
    assert torch.equal(ops.min_positive(conv)[0], expected)
    assert torch.isinf(ops.min_positive(conv)[1]).all()
    # All-zero row: (I_EE - I_sub) / inf = 0, so I_int is the bias alone.
    b_E = torch.tensor([0.5, -0.25, 1.0])
    I_int = ops.integrate(torch.rand(4, 3), torch.rand(4, 3), out, torch.ones(3), b_E)
    assert torch.equal(I_int[2], b_E)


def test_straight_through_gradient_is_exactly_one():
    x = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.5]], requires_grad=True)
    y = ops.stabilise(x, "min_positive", True)
    assert torch.equal(y.detach(), ops.min_positive(x.detach()))
    y[torch.isfinite(y)].sum().backward(retain_graph=True)
    expected = torch.isfinite(y.detach()).float()
    assert torch.equal(x.grad, expected)
    x.grad = None
    upstream = torch.randn(3, 3)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)     # identity, zeros and the all-zero row included


def test_scale_grad_forward_is_exact_and_backward_scaled():
    w = torch.randn(7, 5, requires_grad=True)
    scaled = ops.scale_grad(w, 1 / 784)
    assert torch.equal(scaled, w)
    upstream = torch.randn(7, 5)
    scaled.backward(upstream)
    assert torch.equal(w.grad, upstream * (1 / 784))


# ---------------------------------------------------------------- state and inputs


def test_state_is_explicit_per_forward():
    net = eidsl.build(SPECS / "mlp.ei", paper=True, depth=2, input=[1, 8, 8])
    gen = torch.Generator().manual_seed(4)
    a, b = torch.rand(3, 1, 8, 8, generator=gen), torch.rand(3, 1, 8, 8, generator=gen)
    eidsl.ei_init(net, a)
    first = net(a)
    net(b)
    assert torch.equal(net(a), first)
    assert torch.equal(net(a), first)


def test_event_input_is_time_major(tmp_path):
    T, B = 3, 2
    (tmp_path / "ev.ei").write_text(CONV_NET % "events")
    (tmp_path / "st.ei").write_text(CONV_NET % "image")
    events, static = eidsl.build(tmp_path / "ev.ei").double(), eidsl.build(tmp_path / "st.ei").double()
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(B, 2, 8, 8, generator=gen, dtype=torch.float64)
    eidsl.ei_init(static, image)
    events.load_state_dict(static.state_dict())
    # The same frame at every step is the static encoding.
    assert torch.equal(events(image.unsqueeze(1).expand(B, T, 2, 8, 8)), static(image))
    frames = torch.rand(B, T, 2, 8, 8, generator=gen, dtype=torch.float64)
    P = {n: p.detach() for n, p in static.named_parameters()}
    h = frames.transpose(0, 1).reshape(T * B, 2, 8, 8)
    L1, L2 = ({k: P[v] for k, v in layer(s).items()} for s in ("ei_layer_1", "ei_layer_2"))
    s1 = pm.ei_layer(h, L1, 18, T, conv=(1, 1), W_EI=L1["W_EI"])
    s2 = pm.ei_layer(F.avg_pool2d(s1, 2), L2, 72, T, conv=(2, 1), W_EI=L2["W_EI"])
    O = {k: P[v] for k, v in layer("ei_readout_1", "O").items()}
    torch.testing.assert_close(events(frames), pm.readout(pm.ei_output(s2.flatten(1), O, O["W_EI"]), T),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(eidsl.EidslError, match=r"\(B, T=3, 2, 8, 8\)"):
        events(frames[:, :2])


# ---------------------------------------------------------------- sign constraints (docs/science.md §3.1)


def test_sign_constrained_sgd_equals_reference_eisgd():
    """The reference clamps in every forward and after every step; eidsl only after (and before the
    first forward). Both give the same parameters and losses, step for step."""
    T, B, lr, momentum, wd = 2, 16, 0.5, 0.9, 5e-4
    net = eidsl.build(SPECS / "mlp.ei", paper=True, depth=2, input=[1, 8, 8], T=T).double()
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(B, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (B,), generator=gen)
    eidsl.ei_init(net, x)
    ref = copy.deepcopy(net)
    opt = eidsl.optimizer(net, lr=lr, momentum=momentum, weight_decay=wd)

    buffers, forward_clamp_changed = {}, False
    for _ in range(5):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

        with torch.no_grad():        # the reference's forward begins by clamping all but the biases
            for name, p in ref.named_parameters():
                if not name.endswith("b_E"):
                    forward_clamp_changed |= bool((p < 0).any())
                    p.clamp_(min=0)
        ref_loss = F.cross_entropy(ref(x), y)
        ref.zero_grad(set_to_none=True)
        ref_loss.backward()
        with torch.no_grad():        # EiSGD: L2 into the gradient, momentum buffer, step, clamp
            for name, p in ref.named_parameters():
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=wd)
                buffers[name] = d_p.clone() if name not in buffers else buffers[name].mul_(momentum).add_(d_p)
                p.add_(buffers[name], alpha=-lr)
                if not name.endswith("b_E"):
                    p.clamp_(min=0)
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)

    assert not forward_clamp_changed
    clamped = 0
    for (name, p), (_, q) in zip(net.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)
        if not name.endswith("b_E"):
            assert p.min() >= 0
            clamped += int((p == 0).sum())
    assert clamped > 0, "no parameter reached the constraint: the clamp was not exercised"
    assert (net.get_parameter("layer_1.E.b_E") < 0).any()     # the bias stays sign-free


def test_sign_constrained_sgd_runs_fused_and_matches_the_per_parameter_loop():
    # To rounding: the fused kernel rounds the momentum update its own way (~5e-9 relative on some biases).
    net = eidsl.build(SPECS / "mlp.ei", paper=True, depth=4, input=[1, 8, 8], T=2)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    eidsl.ei_init(net, x)
    loop_net = copy.deepcopy(net)
    fused, loop = eidsl.optimizer(net, lr=0.05), eidsl.optimizer(loop_net, lr=0.05)
    assert all(g["fused"] for g in fused.param_groups)
    for g in loop.param_groups:
        g["fused"] = None
    for _ in range(3):
        for model, opt in ((net, fused), (loop_net, loop)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for (name, p), q in zip(net.named_parameters(), loop_net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9, msg=name)
        if name.endswith(("W_EE", "W_EI")):
            assert p.min() >= 0, name
