"""Specs the runtime cannot execute fail at compile time, located in the spec; never a PyTorch error later."""
import pytest
import torch
from typer.testing import CliRunner

import eidsl
from eidsl_compiler.init import InitError
from eidsl_compiler.lower import lower
from eidsl.cli import app
from eidsl.errors import SpecError

from conftest import SPECS

HEAD = 'import "std"\nnetwork n(T = 2) {\n'

CASES = {
    "inhibition from a pool": (
        '    x = image([1, 8, 8])\n    exc E = lif(4, gain = 1, bias = 0)\n    inh I = relu(2, gain = 1)\n'
        '    x -> I : conv(3, 1, 1)\n    x -> E : conv(3, 2, 1)\n    p = avgpool(I, 2)\n'
        '    p -| E : inhibit()\n    return readout(plain_readout(flatten(E), 3))\n}\n',
        9, "inhibition must come from a population, but 'pool_1' is a pool"),
    "BatchNorm inside a loop": (
        '    x = flatten(image([1, 4, 4]))\n    pop E = lif(6, norm = batchnorm)\n    x -> E : dense()\n'
        '    E -> E : dense(delay = 1)\n    return readout(plain_readout(E, 3))\n}\n',
        4, "'E' is part of a recurrent loop, where BatchNorm has no per-step meaning"),
    "inhibition that does nothing": (
        '    x = flatten(image([1, 4, 4]))\n    exc E = lif(4)\n    inh I = relu(2)\n    x -> E : dense()\n'
        '    x -> I : dense()\n    I -| E : inhibit(sub = false, div = false)\n'
        '    return readout(plain_readout(E, 3))\n}\n',
        8, "neither subtractive nor divisive"),
    "negative delay": (
        '    x = flatten(image([1, 4, 4]))\n    pop E = lif(6)\n    x -> E : dense(delay = -1)\n'
        '    return readout(plain_readout(E, 3))\n}\n',
        5, "delay must be 0 or more time steps, got -1"),
    "readout of a feature map": (
        '    x = image([1, 4, 4])\n    pop O = current(3)\n    x -> O : conv(3, 1, 1)\n    return readout(O)\n}\n',
        6, "the readout needs one value per class, but its input has shape (3, 4, 4)"),
    "division without g_I": (
        '    x = flatten(image([1, 4, 4]))\n    exc E = lif(4, gain = 1, bias = 0)\n    inh I = relu(2)\n'
        '    x -> E : dense()\n    x -> I : dense()\n    I -| E : inhibit(sub = true, div = true)\n'
        '    return readout(plain_readout(E, 3))\n}\n',
        8, "divisive inhibition from 'I' needs its gain g_I"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unlowerable_spec_fails_at_compile_time_with_its_location(tmp_path, monkeypatch, case):
    body, line, message = CASES[case]
    spec = tmp_path / "bad.ei"
    spec.write_text(HEAD + body)
    with pytest.raises(SpecError) as err:
        lower(eidsl.load_graph(spec))
    assert message in err.value.message
    assert err.value.span.file.endswith("bad.ei") and err.value.span.line == line
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["compile", str(spec)])
    assert result.exit_code == 2
    assert f"bad.ei:{line}:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "build").exists()


def test_wrong_batch_shape_is_a_user_error_not_a_matmul_error():
    net = eidsl.build(SPECS / "mlp.ei", depth=2)
    with pytest.raises(eidsl.EidslError, match=r"takes batches of shape \(B, 1, 28, 28\), got \(2, 3, 32, 32\)"):
        net(torch.rand(2, 3, 32, 32))


def test_ei_init_on_a_silent_batch_says_so():
    net = eidsl.build(SPECS / "mlp.ei", depth=2, input=[1, 8, 8])
    with pytest.raises(InitError, match="input of layer_1.E.W_EE, layer_1.I.W_IE, layer_1.I.g_I is silent"):
        eidsl.ei_init(net, torch.zeros(4, 1, 8, 8))
