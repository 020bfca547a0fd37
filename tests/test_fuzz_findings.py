"""Crashes the fuzzer found, pinned as located errors (docs/reliability.md lists them; the others are
in the front end's error corpus, tests/bad_specs)."""
import pytest
import torch

from eidsl.api import build, ei_init, load_graph
from eidsl.errors import SpecError


def spec(tmp_path, body: str, T: int = 2, shape: str = "[1, 4, 4]"):
    path = tmp_path / "net.ei"
    path.write_text(f'import "std"\nnetwork n(T = {T}) {{\n    x = image({shape})\n{body}\n}}\n')
    return path


def first_line(exc_info) -> str:
    return exc_info.value.render().splitlines()[0]


def test_ei_init_on_a_silent_input_is_a_located_error(tmp_path):
    # Only E's projections are E-I initialised, so only the input decides.
    path = spec(tmp_path, "    exc E = lif(4, gain = 1, bias = 0)\n    inh I = relu(2, gain = gain_control)\n"
                          "    h = flatten(x)\n    h -> E : dense(init = ei_balanced)\n"
                          "    h -> I : dense(init = ei_balanced)\n    I -| E : inhibit()\n"
                          "    return readout(plain_readout(E, 8))")
    net = build(path)
    ei_init(net, torch.rand(2, 1, 4, 4))                        # a live input initialises
    with pytest.raises(SpecError) as info:
        ei_init(net, torch.zeros(2, 1, 4, 4))
    assert first_line(info) == (f"{path}:8:5: error: E-I Init: the input of E.W_EE, I.W_IE, I.g_I is silent on "
                                "this batch (all zeros), so its statistics fix no scale")


def test_a_delayed_projection_from_a_later_written_node_compiles(tmp_path):
    # P is written before the flatten that feeds it through a delay.
    path = spec(tmp_path, "    pop P = lif(4)\n    h = flatten(x)\n    h -> P : dense(delay = 1)\n"
                          "    return readout(P)", T=2)
    assert build(path)(torch.rand(3, 1, 4, 4)).shape == (3, 4)


def test_the_size_of_an_input_is_a_located_error(tmp_path):
    path = spec(tmp_path, "    pop P = lif(x.n)\n    h = flatten(x)\n    h -> P : dense()\n    return readout(P)")
    with pytest.raises(SpecError) as info:
        load_graph(path)
    assert first_line(info) == f"{path}:4:17: error: the input 'input' has no size 'n': only populations do"


@pytest.mark.parametrize("init, shown", [("1e300", "1e+300 (constant value)"), ("uniform(0, 1e300)", "1e+300 (uniform high)"),
                                         ("normal(1e39, 1)", "1e+39 (normal mean)")])
def test_an_init_beyond_float32_is_a_located_error(tmp_path, init, shown):
    # Filling a float32 weight with 1e300 raised a RuntimeError (or made inf weights).
    path = spec(tmp_path, f"    pop P = lif(4)\n    h = flatten(x)\n    h -> P : dense(init = {init})\n    return readout(P)")
    with pytest.raises(SpecError) as info:
        build(path)
    assert first_line(info) == (f"{path}:6:5: error: the weights of 'flatten_1' -> 'P' would start at {shown}, "
                                "beyond the float32 range of a weight (about ±3.4e38)")
