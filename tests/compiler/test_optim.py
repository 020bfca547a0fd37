"""compiler/optim.py: the optimiser's groups follow the spec's declarations (sign constraint, decay)."""
import pytest
import torch

import eidsl
from eidsl.errors import SpecError

NET = """
network n(T = 2) {{
    h = flatten(image([1, 4, 4]))
    exc E = lif(6, gain = {gain}, bias = {bias})
    h -> E : dense(init = abs_default)
    return readout(E)
}}
"""


def build(tmp_path, gain="param(1, decay = 0)", bias="param(0.5, decay = 0.5)"):
    path = tmp_path / "n.ei"
    path.write_text(NET.format(gain=gain, bias=bias))
    return eidsl.build(path)


@pytest.mark.parametrize("rule", ["sgd", "eg"])
def test_declared_decay_scales_each_parameters_weight_decay(tmp_path, rule):
    net = build(tmp_path)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = eidsl.optimizer(net, lr=0.1, momentum=0.0, weight_decay=0.2, rule=rule)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(net.named_parameters())
    assert torch.equal(after["E.g_E"], before["E.g_E"])                       # decay = 0: untouched
    assert torch.allclose(after["E.b_E"], before["E.b_E"] * (1 - 0.1 * 0.2 * 0.5))   # half the decay
    W, W0 = after["E.W_EE"], before["E.W_EE"]
    if rule == "sgd":
        assert torch.allclose(W, W0 * (1 - 0.1 * 0.2))                        # the default: all of it
    else:   # EG: w * exp(-lr * sign(w) * wd * w) for the sign-constrained weight
        assert torch.allclose(W, W0 * torch.exp(-0.1 * 0.2 * W0))


def test_without_declarations_the_groups_are_the_two_sign_groups(tmp_path):
    opt = eidsl.optimizer(build(tmp_path, gain="1", bias="0"), lr=0.1, weight_decay=0.3)
    assert [(g["nonneg"], g["weight_decay"], len(g["params"])) for g in opt.param_groups] == \
        [(True, 0.3, 2), (False, 0.3, 1)]


@pytest.mark.parametrize("value", ["-1", "true", '"none"'])
def test_decay_must_be_a_non_negative_number(tmp_path, value):
    with pytest.raises(SpecError, match="decay must be a number >= 0") as err:
        build(tmp_path, gain=f"param(1, decay = {value})")
    assert err.value.span is not None and err.value.span.line == 4


def test_adaptive_clip_bounds_each_units_gradient_by_its_weight_norm():
    from eidsl_compiler.optim import adaptive_clip_
    W = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]]))   # row norms 5, 0.5, 0
    W.grad = torch.tensor([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]])                   # row norms 1, 1, 1
    conv = torch.nn.Parameter(torch.ones(2, 1, 2, 2))                              # channel norms 2
    conv.grad = torch.stack([torch.full((1, 2, 2), 0.01), torch.full((1, 2, 2), 1.0)])   # norms 0.02, 2
    b = torch.nn.Parameter(torch.tensor([2.0, 0.0]))
    b.grad = torch.tensor([-1.0, 1.0])
    adaptive_clip_([W, conv, b], clip=0.1, eps=1e-3)
    # Row 1: |G| = 1 > 0.1 * 5 -> scaled to 0.5; row 2 to 0.1 * 0.5; row 3 (|W| = 0) to 0.1 * eps.
    assert torch.allclose(W.grad.norm(dim=1), torch.tensor([0.5, 0.05, 1e-4]))
    assert torch.allclose(W.grad[0] / W.grad[0].norm(), torch.tensor([0.6, 0.8]))   # direction kept
    assert torch.equal(conv.grad[0], torch.full((1, 2, 2), 0.01))                  # under the bound: untouched
    assert torch.allclose(conv.grad[1].norm(), torch.tensor(0.2))
    assert torch.allclose(b.grad, torch.tensor([-0.2, 1e-4]))                       # per entry, sign kept


def test_agc_is_a_training_setting(tmp_path):
    from eidsl.api import load_graph
    from eidsl.train.config import TrainConfig
    path = tmp_path / "n.ei"
    path.write_text(NET.format(gain="1", bias="0") + "train {\n    agc = 0.02\n}\n")
    assert TrainConfig(**load_graph(path).train).agc == 0.02
    path.write_text(NET.format(gain="1", bias="0") + "train {\n    agc = -1\n}\n")
    with pytest.raises(SpecError, match="agc"):
        load_graph(path)
