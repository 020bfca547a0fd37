"""Data-dependent per-neuron init (compiler/init.py): `unit_std` gains and `zero_mean` biases."""
import pytest
import torch

import eidsl
from eidsl.errors import SpecError

LAYER = """
import "std"
network n(T = 3) {{
    h = {source}
    exc E = lif({n}, gain = {gain}, bias = {bias})
    inh I = relu(4, gain = gain_control)
    h -> E : {kind}(init = ei_balanced)
    h -> I : {kind}(init = ei_balanced)
    I -| E : inhibit(sub = true, div = true, init = 1 / 4, stabilize = min_positive, ste = true)
    return readout(ei_readout(flatten(E), 5))
}}
"""


def build(tmp_path, gain="unit_std", bias="zero_mean", conv=False):
    source, kind, n = ("image([2, 6, 6])", "conv", 6) if conv else ("flatten(image([1, 8, 8]))", "dense", 12)
    path = tmp_path / "n.ei"
    path.write_text(LAYER.format(source=source, kind=kind, n=n, gain=gain, bias=bias))
    return eidsl.build(path)


def per_neuron(current):
    rows = current.transpose(0, 1).flatten(1) if current.dim() > 2 else current.t()
    return rows.double().mean(1), rows.double().std(1, unbiased=False)


@pytest.mark.parametrize("conv", [False, True])
def test_unit_std_and_zero_mean_standardise_each_neuron_on_the_first_batch(tmp_path, conv):
    net = build(tmp_path, conv=conv)
    x = torch.rand((32, 2, 6, 6) if conv else (32, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    eidsl.ei_init(net, x)
    plain = build(tmp_path, gain="1", bias="0", conv=conv)
    eidsl.ei_init(plain, x)
    before = per_neuron(plain.run(x, keep=True)["E:I_int"])
    mean, std = per_neuron(net.run(x, keep=True)["E:I_int"])
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-5)
    # The rule sets g_E = 1 / std and b_E = -mean / std of the circuit's current with g_E = 1, b_E = 0 (same
    # weights: both networks are built with seed 0 and E-I Init draws the same W from the same statistics).
    g, b = net.get_parameter("E.g_E").double(), net.get_parameter("E.b_E").double()
    assert torch.allclose(g, 1 / before[1], rtol=1e-5)
    assert torch.allclose(b, -before[0] / before[1], rtol=1e-5, atol=1e-6)


def test_zero_mean_alone_centres_without_rescaling(tmp_path):
    net = build(tmp_path, gain="1")
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    eidsl.ei_init(net, x)
    plain = build(tmp_path, gain="1", bias="0")
    eidsl.ei_init(plain, x)
    raw = per_neuron(plain.run(x, keep=True)["E:I_int"])
    mean, std = per_neuron(net.run(x, keep=True)["E:I_int"])
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(std, raw[1], rtol=1e-5)
    assert torch.equal(net.get_parameter("E.g_E"), torch.ones(12))


def test_later_layers_are_initialised_on_the_standardised_spikes(tmp_path):
    # E-I Init of the readout measures E's spikes; those must be the spikes of the standardised layer.
    net = build(tmp_path)
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    scales = eidsl.ei_init(net, x)
    spikes = net.run(x, keep=True)["E"]
    m, m2 = spikes.mean().item(), (spikes ** 2).mean().item()
    v = spikes.var(0).mean().item()
    assert scales["ei_readout_1.O.W_EE"] == pytest.approx((v / (12 * (m2 + v))) ** 0.5, rel=1e-6)


def test_a_neuron_with_constant_current_is_refused_by_name(tmp_path):
    net = build(tmp_path)
    with pytest.raises(SpecError, match=r"unit_std: \d+ of 12 neurons of 'E' get the same current"):
        eidsl.ei_init(net, torch.ones(8, 1, 8, 8))


@pytest.mark.parametrize("gain, bias, message", [
    ("zero_mean", "0", "'zero_mean' is a bias rule, given as its gain"),
    ("1", "unit_std", "'unit_std' is a gain rule, given as its bias"),
])
def test_rules_in_the_wrong_place_are_refused(tmp_path, gain, bias, message):
    with pytest.raises(SpecError, match=message):
        build(tmp_path, gain=gain, bias=bias)


@pytest.mark.parametrize("text, message", [
    ("inh I = relu(4, gain = unit_std)", "is inhibitory: its gain is g_I"),
    ("exc O = current(5, gain = unit_std, bias = 0)", "is a readout, whose g_E and b_E"),
    ("exc O = lif(5, gain = unit_std, norm = batchnorm)", "is normalised by batchnorm"),
])
def test_rules_where_they_mean_nothing_are_refused(tmp_path, text, message):
    name = text.split()[1]
    spec = f"""
network n(T = 2) {{
    h = flatten(image([1, 4, 4]))
    {text}
    h -> {name} : dense(init = abs_default)
    {"exc E = current(5, gain = 1, bias = 0)" if name == "I" else ""}
    {"h -> E : dense(init = abs_default)" if name == "I" else ""}
    {"I -| E : inhibit(sub = true, div = true)" if name == "I" else ""}
    {"inh J = relu(2, gain = gain_control)" if name == "O" and "current" in text else ""}
    {"h -> J : dense(init = abs_default)" if name == "O" and "current" in text else ""}
    {"J -| O : inhibit(sub = true, div = false)" if name == "O" and "current" in text else ""}
    return readout({"E" if name == "I" else name})
}}
"""
    path = tmp_path / "bad.ei"
    path.write_text(spec)
    with pytest.raises(SpecError, match=message):
        eidsl.build(path)
