"""The shipped specs' `paper` switch: paper = true is DeepEISNN exactly, paper = false (the default)
is eidsl's E-I circuit and recipe (docs/results.md §9)."""
import math

import pytest
import torch

import eidsl
from eidsl.api import load_graph

from conftest import SPECS

SHIPPED = ["mlp.ei", "convnet.ei", "vgg.ei", "resnet.ei"]
SMALL = {"mlp.ei": {}, "convnet.ei": {"width": 8}, "vgg.ei": {"input": [3, 32, 32]}, "resnet.ei": {}}


def specs_of(net):
    return {p.path: p for p in net.param_specs.values()}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_spec_defaults_to_eidsls_circuit_and_takes_paper_true(name):
    assert load_graph(SPECS / name).params["paper"] is False
    assert load_graph(SPECS / name, {"paper": "true"}).params["paper"] is True


@pytest.mark.parametrize("name", SHIPPED)
def test_paper_true_has_the_reference_rules(name):
    net = eidsl.build(SPECS / name, paper=True)
    specs = specs_of(net)
    w_ie = [p for p in specs.values() if p.role == "W_IE"]
    assert w_ie and all(p.grad_scale == 1.0 for p in w_ie)
    readout = [p for p in specs.values() if p.path.startswith("classifier_1.")]
    assert not any(p.used for p in readout if p.role in ("g_E", "b_E"))   # unused, as in the reference
    assert next(p for p in readout if p.role == "W_IE").shape[0] == 10 // 4


@pytest.mark.parametrize("name", SHIPPED)
def test_paper_false_scales_w_ie_and_gives_the_readout_its_gain_bias_and_one_interneuron_per_class(name):
    net = eidsl.build(SPECS / name)
    specs = specs_of(net)
    for p in specs.values():
        if p.role == "W_IE":
            prefix = p.path[:-len(".I.W_IE")]
            n_E = (specs.get(prefix + ".E.W_EE") or specs[prefix + ".O.W_EE"]).shape[0]
            assert p.grad_scale == pytest.approx(1 / math.sqrt(n_E), rel=1e-12), p.path
    readout = {p.role: p for p in specs.values() if p.path.startswith("classifier_1.O.")}
    assert readout["g_E"].used and readout["b_E"].used and readout["g_E"].nonneg and not readout["b_E"].nonneg
    assert specs["classifier_1.I.W_IE"].shape[0] == 10


def test_paper_switch_keeps_the_hidden_circuit_and_changes_only_what_it_says():
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    ours, paper = eidsl.build(SPECS / "mlp.ei", seed=5), eidsl.build(SPECS / "mlp.ei", paper=True, seed=5)
    eidsl.ei_init(ours, x)
    eidsl.ei_init(paper, x)
    a, b = ours.run(x, keep=True), paper.run(x, keep=True)
    for layer in ("layer_1.E", "layer_2.E", "layer_3.E"):
        assert torch.equal(a[layer], b[layer]), layer   # same weights, same spikes: only gradients differ
    # The readout: ours g_E (I_EE - W_EI s_I) + b_E; the paper's I_EE - W_EI s_I with fewer interneurons.
    out = a["classifier_1.O"]
    W_EE, W_IE = ours.get_parameter("classifier_1.O.W_EE"), ours.get_parameter("classifier_1.I.W_IE")
    W_EI, g_E = ours.get_parameter("classifier_1.O.W_EI"), ours.get_parameter("classifier_1.O.g_E")
    h = a["layer_3.E"]
    expected = g_E * (h @ W_EE.t() - torch.relu(h @ W_IE.t()) @ W_EI.t()) + ours.get_parameter("classifier_1.O.b_E")
    assert torch.allclose(out, expected, atol=1e-5)
    with torch.no_grad():
        ours.get_parameter("classifier_1.O.g_E").mul_(2.0)
        ours.get_parameter("classifier_1.O.b_E").add_(0.5)
    assert torch.allclose(ours.run(x, keep=True)["classifier_1.O"], 2 * (expected - 0.0) + 0.5, atol=1e-5)


def test_recipes():
    def lr(**sets):
        return load_graph(SPECS / "mlp.ei", {k: str(v).lower() for k, v in sets.items()}).train["lr"]
    assert lr(paper=True, depth=2) == lr(paper=True, depth=16) == 0.005   # the paper's E-I recipe
    assert [lr(depth=d) for d in (2, 4, 8, 16)] == [0.03, 0.03, 0.02, 0.005]
    assert lr(family="bn") == lr(family="bn", paper=True) == 0.1   # baselines keep theirs
