"""Static-input hoisting: with direct encoding the first projection sees the same image at every step,
so it runs once per sample and its weight gradient comes from the output gradients summed over T."""
import pytest
import torch

import eidsl
from eidsl_compiler import ops

from conftest import SPECS

CASES = [("mlp.ei", {}, (4, 1, 28, 28)), ("vgg.ei", {"T": "3"}, (2, 3, 32, 32))]


def _rows_of_products(monkeypatch):
    seen = []
    project = ops.project

    def spy(x, *args, **kw):
        seen.append(x.shape[0])
        return project(x, *args, **kw)
    monkeypatch.setattr(ops, "project", spy)
    return seen


@pytest.mark.parametrize("spec, sets, shape", CASES, ids=["dense", "conv"])
def test_first_projection_runs_once_per_sample_with_the_same_values(monkeypatch, spec, sets, shape):
    net = eidsl.build(SPECS / spec, sets=sets)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    eidsl.ei_init(net, x)
    B, T = shape[0], net.T
    seen = _rows_of_products(monkeypatch)
    out = net(x)
    assert seen[0] == B and all(rows == T * B for rows in seen[1:]), seen
    seen.clear()
    with ops.hoist_static(False):
        plain = net(x)
    assert seen[0] == T * B
    _same_forward(spec.startswith("vgg"), out, plain)


def _same_forward(conv: bool, a, b):
    """Convolutions give every sample the same bits at any batch size. A BLAS matmul may pick another
    kernel for fewer rows (seen below 16 rows here): a few ulps, so 1e-6 relative."""
    if conv:
        assert torch.equal(a, b)
    else:
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-6


@pytest.mark.parametrize("op, shape, weights", [
    ("dense", (8, 784), [(100, 784), (25, 784)]),
    ("conv", (8, 3, 16, 16), [(32, 3, 3, 3), (8, 3, 3, 3)]),
])
def test_weight_gradient_from_summed_output_gradients(op, shape, weights):
    """One product with the gradient summed over T instead of T products: a different summation
    order, so not bit-identical, but as close to the float64 gradient as the T-fold product is."""
    gen = torch.Generator().manual_seed(0)
    T, x = 4, torch.rand(*shape, generator=gen)
    ws = [torch.rand(*s, generator=gen) for s in weights]
    kw = {"padding": 1} if op == "conv" else {}
    grads = {}
    for key, hoist, dtype in (("plain", False, torch.float32), ("hoisted", True, torch.float32),
                              ("fp64", False, torch.float64)):
        leaves = [w.detach().to(dtype, copy=True).requires_grad_() for w in ws]
        with ops.hoist_static(hoist):
            outs = ops.project_static(x.to(dtype), T, leaves, [None] * len(ws), op, **kw)
        upstream = [torch.randn(o.shape, generator=torch.Generator().manual_seed(k)).to(dtype)
                    for k, o in enumerate(outs)]
        torch.autograd.backward(outs, upstream)
        grads[key] = [w.grad.double() for w in leaves]
        if key == "hoisted":
            for a, b in zip(outs, forward):
                _same_forward(op == "conv", a.detach(), b)
        forward = [o.detach() for o in outs]
    for plain, hoisted, exact in zip(grads["plain"], grads["hoisted"], grads["fp64"]):
        scale = exact.abs().max()
        err_plain, err_hoisted = (plain - exact).abs().max() / scale, (hoisted - exact).abs().max() / scale
        assert err_hoisted <= 2 * err_plain + 1e-7, (err_hoisted, err_plain)
        assert (hoisted - plain).abs().max() / scale < 3e-5


@pytest.mark.parametrize("spec, sets, shape", CASES, ids=["dense", "conv"])
def test_ei_init_draws_the_same_weights(spec, sets, shape):
    """E-I Init measures the first projection's input over T*B rows: the unbiased variance of T copies
    (n - 1 = T*B - 1) is not that of one copy, so its statistics must keep seeing the T copies."""
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    states = []
    for hoist in (True, False):
        net = eidsl.build(SPECS / spec, sets=sets)
        with ops.hoist_static(hoist):
            eidsl.ei_init(net, x)
        states.append(net.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    from eidsl_compiler.init import statistics
    T = eidsl.build(SPECS / spec, sets=sets).T
    one, repeated = statistics(x), statistics(ops.repeat_static(x, T))
    assert one[2] != repeated[2]


def test_a_static_input_with_another_reader_is_still_repeated():
    """A pool (or a loop, or the output) reading the image gets it as (T*B, ...); a flatten passes it on."""
    from eidsl_compiler.plan import NoAttrs, Plan, Pool, Project, Step, Steps, static_input

    def plan(*readers):
        steps = [Step("repeat_static", ("input",), ("input",), "input", Steps(4)),
                 Step("flatten", ("flat",), ("input",), "flat"), *readers]
        return Plan("p", 4, None, steps, [], [], "out")
    project = Step("project", ("E<-flat",), ("flat",), "E", Project("dense"))
    assert static_input(plan(project)) == {"input": False, "flat": False}
    pool = Step("avgpool", ("pool",), ("input",), "pool", Pool(2, 2))
    assert static_input(plan(project, pool)) == {"input": True, "flat": False}
    assert static_input(plan(pool)) == {}
    assert static_input(plan(Step("relu", ("r",), ("flat",), "r", NoAttrs()), project))["flat"] is True
