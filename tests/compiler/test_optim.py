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
