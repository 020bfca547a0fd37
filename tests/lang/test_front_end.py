"""Front end: grammar, elaboration, checks and the IR, on the shipped specs."""
import json

import pytest

from eidsl import ir
from eidsl.api import load_graph
from eidsl.tools.describe import summarize
from eidsl.errors import EidslError, SpecError
from eidsl.lang.parser import parse

from conftest import SPECS


@pytest.mark.parametrize("spec, params, expected", [
    ("mlp.ei", {"paper": True}, 1_144_067),        # E-I MLP-4 MNIST, reference-keys/README.md
    ("vgg.ei", {"paper": True}, 5_048_714),        # E-I VGG-8 CIFAR-10
    ("resnet.ei", {"paper": True}, 14_401_226),    # E-I ResNet-18 CIFAR-10
    # eidsl's circuit: the readout's 10 - 2 more interneurons (W_IE rows of the readout's fan-in,
    # their g_I and W_EI columns); everything else is the reference's
    ("mlp.ei", {}, 1_144_067 + 8 * 300 + 8 + 8 * 10),
])
def test_parameter_counts_equal_the_reference(spec, params, expected):
    assert summarize(load_graph(SPECS / spec, **params))["parameters"] == expected


@pytest.mark.parametrize("depth, widths", [
    (2, [500]), (4, [500, 500, 300]), (8, [500, 500, 300, 300, 300, 100, 100]),
    (16, [500] * 5 + [300] * 5 + [100] * 5),
])
def test_mlp_depths_have_the_reference_widths(depth, widths):
    g = load_graph(SPECS / "mlp.ei", depth=depth, paper=True)
    hidden = [r.size for n, r in g.nodes(ir.Population) if r.sign == "exc" and r.model == "lif"]
    assert hidden == widths
    inh = [r.size for n, r in g.nodes(ir.Population) if r.sign == "inh"]
    assert inh == [w // 4 for w in widths] + [10 // 4]
    ours = load_graph(SPECS / "mlp.ei", depth=depth)   # paper = false: one readout interneuron per class
    assert [r.size for n, r in ours.nodes(ir.Population) if r.sign == "inh"] == [w // 4 for w in widths] + [10]
    wide = load_graph(SPECS / "mlp.ei", depth=depth, min_width=300)
    hidden = [r.size for n, r in wide.nodes(ir.Population) if r.sign == "exc" and r.model == "lif"]
    assert hidden == [max(w, 300) for w in widths]


@pytest.mark.parametrize("family", ["ei", "bn", "plain"])
@pytest.mark.parametrize("spec", ["mlp.ei", "vgg.ei", "resnet.ei"])
def test_every_family_checks(spec, family):
    g = load_graph(SPECS / spec, family=family)
    norms = {r.norm for _, r in g.nodes(ir.Population)}
    inh = [n for n, r in g.nodes(ir.Population) if r.sign == "inh"]
    assert bool(inh) == (family == "ei")
    assert ("batchnorm" in norms) == (family == "bn")


def test_vgg_depths_count_convolutions():
    for depth, convs in [(8, 5), (11, 8), (16, 13), (19, 16)]:
        g = load_graph(SPECS / "vgg.ei", depth=depth)
        n = sum(1 for _, _, e in g.edges(ir.Projection) if e.op == "conv") // 2   # E->E and E->I
        assert n == convs


def test_shapes_fan_in_and_signs_are_inferred():
    g = load_graph(SPECS / "vgg.ei")
    assert g.node("layer_1.E").shape == (64, 32, 32)
    assert g.node("layer_5.E").shape == (512, 2, 2)
    assert g.edge("input", "layer_1.E").fan_in == 27
    assert g.edge("pool_1", "layer_2.E").fan_in == 64 * 9
    assert g.edge("layer_1.I", "layer_1.E").fan_in == 27     # W_EI's d is the layer's fan-in
    assert all(e.nonneg for _, _, e in g.edges(ir.Projection))
    g = load_graph(SPECS / "vgg.ei", family="bn")
    assert not any(e.nonneg for _, _, e in g.edges(ir.Projection))


def test_ir_round_trips_through_json():
    for spec in ("mlp.ei", "vgg.ei", "resnet.ei"):
        g = load_graph(SPECS / spec)
        text = g.dumps()
        again = ir.Graph.loads(text)
        assert again == g
        assert again.dumps() == text
        assert json.loads(text)["format"] == "eidsl-ir/1"


def test_set_overrides_reach_every_layer():
    g = load_graph(SPECS / "mlp.ei", sets={"ratio": "2", "T": "8", "paper": "true"})
    assert [r.size for _, r in g.nodes(ir.Population) if r.sign == "inh"] == [250, 250, 150, 5]
    assert g.node("input").T == 8


def test_located_error_with_caret_and_hint(tmp_path):
    spec = tmp_path / "bad.ei"
    spec.write_text('import "std"\nnetwork n(T = 4) {\n    x = image([1, 8, 8])\n    h = layr(flatten(x), 10)\n'
                    '    return readout(h)\n}\n')
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    text = info.value.render()
    assert text.splitlines()[0] == f"{spec}:4:9: error: unknown motif or function 'layr'"
    assert text.splitlines()[2] == "            ^^^^"
    assert "hint: did you mean 'layer'" in text


def test_syntax_error_names_expected_tokens():
    with pytest.raises(SpecError) as info:
        parse("network n( { }", "x.ei")
    assert info.value.render().startswith("x.ei:1:12: error: unexpected '{'")
    assert "expected ')', a name" in info.value.render()


def test_independent_errors_are_all_reported(tmp_path):
    spec = tmp_path / "two.ei"
    spec.write_text('import "std"\nnetwork n(T = 4) {\n    a = foo(1)\n    b = bar(2)\n'
                    '    return readout(layer(flatten(image([1, 8, 8])), 10))\n}\n')
    with pytest.raises(EidslError) as info:
        load_graph(spec)
    text = info.value.render()
    assert "two.ei:3:9: error: unknown motif or function 'foo'" in text
    assert "two.ei:4:9: error: unknown motif or function 'bar'" in text
