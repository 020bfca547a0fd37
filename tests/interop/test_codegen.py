"""`eidsl compile`: the build folder, and a generated module that is the eager network, bit for bit."""
import ast
import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

import eidsl
from eidsl.interop.builds import BuildError, latest_build, load_build
from eidsl.cli import app

from conftest import SPECS

runner = CliRunner()

CASES = [
    ("mlp.ei", [], (2, 1, 28, 28)),
    ("mlp.ei", ["family=bn", "depth=2"], (2, 1, 28, 28)),
    ("vgg.ei", ["T=2"], (2, 3, 32, 32)),
    ("resnet.ei", ["T=1", "input=[3,8,8]"], (2, 3, 8, 8)),
    ("motifs/recurrent_inhibition_loop.ei", ["T=3", "hidden=[24,16]"], (2, 1, 28, 28)),
    # DANN: exp-stored g_I, declared cSGD gradient factors, linear populations, max-pooling
    ("dann.ei", ["n_e=20", "n_i=4"], (2, 784)),
    ("dann.ei", ["layer=dense", "hidden=1"], (2, 784)),
    ("dann_conv.ei", [], (2, 1, 28, 28)),
]


def compile_cli(tmp_path, spec, sets, *extra):
    args = ["compile", str(SPECS / spec), *[a for s in sets for a in ("--set", s)], *extra]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def import_generated(path):
    spec = importlib.util.spec_from_file_location(f"generated_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("spec, sets, shape", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_generated_module_equals_the_eager_network(tmp_path, monkeypatch, spec, sets, shape):
    monkeypatch.chdir(tmp_path)
    compile_cli(tmp_path, spec, sets, "-q")
    build = latest_build()
    info = load_build(build)
    source = (build / "model.py").read_text()
    imports = {n.names[0].name if isinstance(n, ast.Import) else n.module
               for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert imports <= {"torch", "eidsl_compiler", "eidsl_compiler.plan"}, imports

    eager = eidsl.build_graph(info.graph)      # data-free initial values: the comparison needs no E-I Init
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    generated = import_generated(build / "model.py").Model()
    assert list(generated.state_dict()) == list(eager.state_dict())
    generated.load_state_dict(eager.state_dict())

    a, b = eager(x), generated(x)
    assert torch.equal(a, b)
    target = torch.randn_like(a)
    ((a - target) ** 2).sum().backward()
    ((b - target) ** 2).sum().backward()
    grads = 0
    for (name, p), q in zip(eager.named_parameters(), generated.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name
            grads += 1
    assert grads > len(list(eager.parameters())) // 2


def test_generated_forward_reads_in_paper_terms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compile_cli(tmp_path, "mlp.ei", ["paper=true"], "-q")
    source = (latest_build() / "model.py").read_text()
    forward = source.split("def forward")[1]
    # The paper's layer runs as the runtime runs it, circuit and LIF fused, with its formula beside it.
    for term in ("layer_1_I_EE, layer_1_I_IE = ops.project", "layer_1_s_I = ops.relu(layer_1_I_IE)",
                 "# I_int = g_E (I_EE - W_EI s_I) / min_positive(W_EI (g_I * s_I)) + b_E", "1 / 784",
                 "layer_1_s_E = ops.ei_circuit_lif(layer_1_I_EE, layer_1_s_I,",
                 "classifier_1_I_sub, classifier_1_I_div, rule = ops.inhibition([classifier_1_s_I]",
                 "ops.integrate_terms(classifier_1_I_EE, classifier_1_I_sub, classifier_1_I_div, rule",
                 "# output layer: the balanced current I_EE - I_sub",
                 "logits = ops.readout_mean("):
        assert term in forward, term
    # One comment per layer, pointing at the spec line that declares it.
    headers = [line.strip() for line in forward.splitlines() if line.strip().startswith("# layer_")]
    assert [h.split(":")[0] for h in headers] == ["# layer_1", "# layer_2", "# layer_3"]
    assert all("std.ei:18)" in h for h in headers)   # `exc E = lif(...)` in ei_layer


def test_build_folder_contents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = compile_cli(tmp_path, "mlp.ei", ["depth=2", "paper=true"])
    folder = tmp_path / "build" / "mlp"
    assert sorted(p.name for p in folder.iterdir()) == ["ir.json", "model.py", "spec.json", "summary.json"]
    summary = json.loads((folder / "summary.json").read_text())
    # W_EE+W_IE 625x784, W_EI 500x125, g_I 125, g_E and b_E 500; readout 12x500, W_EI 10x2, g_I 2, g_E and b_E 10
    assert summary["parameters"] == 784 * 625 + 500 * 125 + 125 + 2 * 500 + 500 * 12 + 10 * 2 + 2 + 2 * 10
    assert summary["neurons"] == {"E": 510, "I": 127, "free": 0}
    # multiply-adds: 784 -> 625, two W_EI products of 500x125, 500 -> 12, one (subtractive) 10x2 product
    assert summary["flops_per_step"] == 784 * 625 + 2 * 500 * 125 + 500 * 12 + 10 * 2
    assert summary["plan"]["fused_projections"] == 2
    for text in ("559,667", "E 510", "I 127", "621,020"):
        assert text in result.output
    info = load_build(latest_build())
    assert info.name == "mlp" and info.sets == {"depth": "2", "paper": "true"} and info.spec == (SPECS / "mlp.ei").resolve()
    assert info.graph == eidsl.load_graph(SPECS / "mlp.ei", {"depth": "2", "paper": "true"})
    # -o elsewhere still becomes the most recent build.
    compile_cli(tmp_path, "vgg.ei", [], "-q", "-o", str(tmp_path / "elsewhere"))
    assert latest_build() == (tmp_path / "elsewhere").resolve()
    assert not list(tmp_path.rglob(".*.tmp*")) and not [p for p in tmp_path.rglob(".*") if p.is_file()]


def test_no_build_yet_says_what_to_run(tmp_path):
    with pytest.raises(BuildError) as err:
        latest_build(tmp_path / "build")
    assert "run `eidsl compile SPEC` first" in err.value.render()
    with pytest.raises(BuildError, match="spec.json is missing"):
        load_build(tmp_path)


def test_compile_reports_spec_errors_with_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compile", str(SPECS / "mlp.ei"), "--set", "depth=3"])
    assert result.exit_code == 2
    line = (SPECS / "mlp.ei").read_text().splitlines().index("    }[depth]") + 1   # where the lookup fails
    assert f"mlp.ei:{line}:" in result.output and "depth = 3" in result.output
    assert not (tmp_path / "build").exists()


LOOPS = {
    # event frames into a convolutional recurrent-inhibition loop
    "events_conv_loop.ei": ('import "recurrent_inhibition_loop"\nnetwork a(T = 4) {\n    h = events([2, 8, 8])\n'
                            '    h = recurrent_inhibition_loop(h, 8, op = "conv")\n'
                            '    return readout(ei_readout(flatten(avgpool(h, 4)), 4))\n}\n', (3, 4, 2, 8, 8)),
    # a loop through a pool with a 2-step delay, and delayed inhibition entering it from outside
    "pool_delay_loop.ei": ('import "std"\nnetwork b(T = 5) {\n    x = image([2, 8, 8])\n'
                           '    exc E = lif(8, gain = 1, bias = 0)\n    inh I = relu(4)\n'
                           '    exc F = lif(8, gain = 1, bias = 0)\n'
                           '    x -> E : conv(3, 1, 1, init = abs_default)\n'
                           '    x -> I : conv(3, 1, 1, init = abs_default, delay = 1)\n'
                           '    p = avgpool(E, 3, stride = 1)\n    p -> F : conv(3, 1, 2, init = abs_default)\n'
                           '    F -> E : conv(3, 1, 1, init = abs_default, delay = 2)\n'
                           '    I -| E : inhibit(sub = true, div = false, init = 0.25, delay = 1)\n'
                           '    return readout(plain_readout(flatten(F), 3))\n}\n', (3, 2, 8, 8)),
}


@pytest.mark.parametrize("name", list(LOOPS))
def test_generated_loops_equal_the_interpreter(tmp_path, monkeypatch, name):
    text, shape = LOOPS[name]
    (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compile", name, "-q", "-I", str(SPECS / "motifs")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = load_build(latest_build())
    eager = eidsl.build_graph(info.graph).double()
    assert any(s.op == "loop" for s in eager.plan.steps)
    generated = import_generated(latest_build() / "model.py").Model().double()
    generated.load_state_dict(eager.state_dict())
    x = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = eager(x), generated(x)
    assert torch.equal(a, b)
    a.sum().backward()
    b.sum().backward()
    for (n, p), q in zip(eager.named_parameters(), generated.parameters()):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad), n


HOSTILE_SET = 'family="ei" # """; __import__("pathlib").Path("PWNED_SET").touch(); """'


@pytest.mark.parametrize("tail", ["", " \u2028\x0c\r"], ids=["newline", "separators"])
def test_hostile_paths_and_sets_stay_inert_in_the_generated_module(tmp_path, monkeypatch, tail):
    """Issue 23.1: --set text, a spec name with `\"\"\"` and a folder name with a newline used to be
    written into model.py verbatim; importing the module or running forward then ran user code."""
    folder = tmp_path / ('a\nimport pathlib; pathlib.Path("PWNED_DIR").touch()\nb' + tail)
    folder.mkdir()
    spec = folder / ('x"""; __import__("pathlib").Path("PWNED_NAME").touch(); """' + ("\\" if tail else "") + ".ei")
    spec.write_text((SPECS / "mlp.ei").read_text())
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compile", str(spec), "--set", "depth=2", "--set", HOSTILE_SET, "-q",
                                 "-o", str(tmp_path / "B")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    source = (tmp_path / "B" / "model.py").read_text()
    module = import_generated(tmp_path / "B" / "model.py")
    module.Model()(torch.rand(2, 1, 28, 28))
    assert not list(tmp_path.glob("PWNED*")), "generated code ran user text"
    # The provenance is still there, as an escaped literal that reads back exactly.
    assert str(spec) in module.__doc__ and HOSTILE_SET in module.__doc__
    tree = ast.parse(source)
    calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
             for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not calls & {"touch", "__import__", "system", "exec", "eval"}, calls
