"""Each crash the fuzzer found, pinned as a located error (docs/reliability.md lists them)."""
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
    assert first_line(info).startswith(f"{path}:8:5: error: E-I Init: the input of ")
    assert "is silent on this batch (all zeros), so its statistics fix no scale" in first_line(info)


@pytest.mark.parametrize("conv, shown", [("conv(3, 0, 1)", "22: error: stride must be at least 1, got 0"),
                                         ("conv(0, 1, 0)", "19: error: k must be at least 1, got 0"),
                                         ("conv(3, 1, -1)", "25: error: pad must be 0 or more, got -1")])
def test_impossible_conv_geometry_is_a_located_error(tmp_path, conv, shown):
    path = spec(tmp_path, f"    pop P = lif(4)\n    x -> P : {conv}\n    return readout(P)")
    with pytest.raises(SpecError) as info:
        load_graph(path)
    assert first_line(info) == f"{path}:5:{shown}"       # at the offending argument


def test_inhibition_from_a_pool_is_a_located_error(tmp_path):
    path = spec(tmp_path, "    exc E = lif(4, gain = 1, bias = 0)\n    inh I = relu(2, gain = 1)\n"
                          "    x -> I : conv(3, 1, 1)\n    x -> E : conv(3, 2, 1)\n    p = avgpool(I, 2)\n"
                          "    p -| E : inhibit()\n    return readout(E)", shape="[1, 8, 8]")
    with pytest.raises(SpecError) as info:
        load_graph(path)
    assert first_line(info).startswith(f"{path}:9:5: error: ")
    assert first_line(info).endswith("population, but 'pool_1' is a pool")


@pytest.mark.parametrize("option, message", [
    ("tau = 0", "tau must be at least 1 (the leak keeps 1 - 1/tau of the potential per step), got 0"),
    ("tau = 1e400 - 1e400", "number 1e400 is too large"),
    ("alpha = 0, surrogate = rectangle", "alpha must be positive (the surrogate's sharpness), got 0"),
])
def test_impossible_neuron_constants_are_refused_when_checking(tmp_path, option, message):
    path = spec(tmp_path, f"    pop P = lif(4, {option})\n    h = flatten(x)\n    h -> P : dense()\n"
                          "    return readout(P)")
    with pytest.raises(SpecError) as info:
        load_graph(path)                  # refused by the checks, before any compiling
    assert first_line(info).startswith(f"{path}:4:")
    assert first_line(info).endswith(message)


@pytest.mark.parametrize("delay, T, message", [
    (2, 2, "6:5: error: a delay of 2 steps is not shorter than T = 2, so 'flatten_1' -> 'P' would only ever carry zeros"),
    (-1, 4, "6:28: error: delay must be 0 or more time steps, got -1")])
def test_delays_outside_the_time_steps_are_refused(tmp_path, delay, T, message):
    path = spec(tmp_path, f"    pop P = lif(4)\n    h = flatten(x)\n    h -> P : dense(delay = {delay})\n"
                          "    return readout(P)", T=T)
    with pytest.raises(SpecError) as info:
        build(path)
    assert first_line(info) == f"{path}:{message}"


def test_a_delay_inside_the_time_steps_compiles(tmp_path):
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
