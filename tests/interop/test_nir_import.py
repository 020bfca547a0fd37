"""`eidsl import nir`: other libraries' NIR graphs as eidsl specs (against the exporter's own model and
against NIR's equations), refusals by node name, and the exact round trip of eidsl's own circuits."""
import math

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")

from typer.testing import CliRunner  # noqa: E402

from eidsl.interop import nir_export as NX  # noqa: E402
from eidsl.interop import nir_import as NI  # noqa: E402
from eidsl.interop import nir_run  # noqa: E402
from eidsl.api import build_graph, load_graph  # noqa: E402
from eidsl.cli import app  # noqa: E402

from conftest import ROOT  # noqa: E402

runner = CliRunner()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max()) if b.numel() else 0.0


# ---------------------------------------------------------------- a real exporter: snnTorch


def _snntorch_net(reset="zero", conv=False):
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    if conv:
        layers = [torch.nn.Conv2d(2, 4, 3, padding=1),
                  snn.Leaky(beta=torch.full((4, 8, 8), 0.9), threshold=torch.full((4, 8, 8), 0.5), init_hidden=True,
                            reset_mechanism=reset),
                  torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 5)]
    else:
        layers = [torch.nn.Linear(20, 16),
                  snn.Leaky(beta=torch.full((16,), 0.9), threshold=torch.ones(16), init_hidden=True,
                            reset_mechanism=reset),
                  torch.nn.Linear(16, 5)]
    layers.append(snn.Leaky(beta=torch.full((5,), 0.8), threshold=torch.full((5,), 0.5), init_hidden=True,
                            output=True, reset_mechanism=reset))
    with torch.no_grad():   # busier layers, so that the comparison means something
        for m in layers:
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(2.0)
    return torch.nn.Sequential(*layers)


def _snntorch_run(net, x, T):
    from snntorch import utils
    utils.reset(net)
    spikes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: spikes.setdefault(k, []).append(
        (o[0] if isinstance(o, tuple) else o).detach().clone()))
        for k, m in enumerate(net) if type(m).__name__ == "Leaky"]
    with torch.no_grad():
        for _ in range(T):
            net(x)
    for h in hooks:
        h.remove()
    return [torch.stack(v) for _, v in sorted(spikes.items())]


@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
def test_snntorch_export_imports_to_the_same_spikes(tmp_path, conv):
    """snnTorch Leaky (reset to zero) -> NIR -> eidsl: every layer's spike train and the output are equal."""
    from snntorch.export_nir import export_to_nir
    net = _snntorch_net(conv=conv)
    shape = (2, 8, 8) if conv else (20,)
    path = tmp_path / "snn.nir"
    nir.write(path, export_to_nir(net, torch.rand(1, *shape), ignore_dims=[0]))
    T = 8
    res = runner.invoke(app, ["import", "nir", str(path), "-o", str(tmp_path / "out"), "--T", str(T)])
    assert res.exit_code == 0, res.output
    assert "dt = 0.0001: inferred" in res.output
    text = (tmp_path / "out" / "imported.ei").read_text()
    assert "reset = hard" in text and ("conv_lif(" if conv else "dense_lif(") in text
    graph = load_graph(tmp_path / "out" / "imported.ei")
    eidsl_net = build_graph(graph)
    from safetensors.torch import load_file
    eidsl_net.load_state_dict(load_file(str(tmp_path / "out" / "weights.safetensors")), strict=True)

    x = torch.rand(64, *shape, generator=torch.Generator().manual_seed(1)) * 1.5
    ref = _snntorch_run(net, x, T)
    with torch.no_grad():
        env = eidsl_net.run(x, keep=True)
        out = eidsl_net(x)
    pops = [n for n, _ in graph.nodes() if n.endswith(".E")]
    assert len(pops) == len(ref)
    for name, spikes in zip(pops, ref):
        got = env[name].view(T, 64, *spikes.shape[2:])
        assert 0.02 < spikes.mean() < 0.98, name       # firing, and not always
        assert torch.equal(got, spikes), name
    expected = ref[-1].mean(0)
    assert _rel(out, expected) <= 1e-5


def test_snntorch_subtract_reset_is_not_what_the_file_says(tmp_path):
    """snnTorch writes its default reset-by-subtraction Leaky as a NIR LIF, whose reset is to v_reset.
    The import follows the file (as snnTorch's own import_nir does): the spikes then differ."""
    from snntorch.export_nir import export_to_nir
    net = _snntorch_net(reset="subtract")
    imported = NI.import_graph(export_to_nir(net, torch.rand(1, 20), ignore_dims=[0]), T=8)
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(1)) * 1.5
    ref = _snntorch_run(net, x, 8)
    with torch.no_grad():
        env = imported.network().run(x, keep=True)
    first = [n for n, _ in imported.graph.nodes() if n.endswith(".E")][0]
    assert not torch.equal(env[first].view(8, 64, -1), ref[0])


# ---------------------------------------------------------------- NIR's own equations (nirtorch, Euler)


def _f(a):
    return np.asarray(a, dtype=np.float32)


def _hand_graph():
    """IF, Scale, Delay, LIF with a leak potential and r != tau/dt, and an integrator readout."""
    gen = np.random.default_rng(0)
    dt = 1e-3
    nodes = {
        "in": nir.Input(input_type=np.array([6])),
        "w1": nir.Affine(weight=_f(gen.uniform(0, 1, (10, 6))), bias=_f(gen.uniform(-0.1, 0.2, 10))),
        "if1": nir.IF(r=_f(np.full(10, 300.0)), v_threshold=_f(np.full(10, 0.8)), v_reset=_f(np.zeros(10))),
        "halve": nir.Scale(scale=_f(np.full(10, 0.5))),
        "w2": nir.Linear(weight=_f(gen.uniform(-0.5, 1.5, (7, 10)))),
        "late": nir.Delay(delay=_f(np.full(7, 2 * dt))),
        "lif2": nir.LIF(tau=_f(np.full(7, 3 * dt)), r=_f(np.full(7, 2.0)), v_leak=_f(np.full(7, 0.3)),
                        v_threshold=_f(np.full(7, 0.6)), v_reset=_f(np.full(7, -0.1))),
        "skip": nir.Linear(weight=_f(gen.uniform(0, 0.3, (7, 6)))),
        "w3": nir.Affine(weight=_f(gen.uniform(-1, 1, (3, 7))), bias=_f(gen.uniform(-0.1, 0.1, 3))),
        "acc": nir.I(r=_f(np.full(3, 50.0))),
        "out": nir.Output(output_type=np.array([3])),
    }
    edges = [("in", "w1"), ("w1", "if1"), ("if1", "halve"), ("halve", "w2"), ("w2", "late"), ("late", "lif2"), ("in", "skip"), ("skip", "lif2"),
             ("lif2", "w3"), ("w3", "acc"), ("acc", "out")]
    return nir.NIRGraph(nodes, edges), dt


def test_hand_built_graph_follows_nirs_equations():
    g, dt = _hand_graph()
    T = 10
    imported = NI.import_graph(g, dt=dt, T=T)
    from eidsl import ir
    pops = [r for _, r in imported.graph.nodes(ir.Population)]
    assert [p.model for p in pops] == ["lif", "lif", "current"] and pops[0].reset == pops[1].reset == "hard"
    assert pops[0].tau == NI.IF_TAU and abs(pops[1].tau - 3) < 1e-6 and pops[1].v_reset == np.float32(-0.1)
    assert sorted(e.delay for _, _, e in imported.graph.edges(ir.Projection)) == [0, 0, 0, 2]
    x = torch.rand(32, 6, generator=torch.Generator().manual_seed(2))
    expected = nir_run.run(g, x, T=T, dt=dt)
    net = imported.network()
    with torch.no_grad():
        got = net(x)
        env = net.run(x, keep=True)
    first = [n for n, _ in imported.graph.nodes() if n.endswith(".E")][0]
    assert 0.05 < env[first].mean() < 0.95
    assert _rel(got, expected) <= 1e-5, (got - expected).abs().max()


def test_threshold_and_sumpool_on_a_convolution():
    gen = np.random.default_rng(1)
    nodes = {
        "in": nir.Input(input_type=np.array([1, 6, 6])),
        "c": nir.Conv2d(input_shape=(6, 6), weight=_f(gen.uniform(-0.3, 1, (3, 1, 3, 3))), stride=1, padding=1,
                        dilation=1, groups=1, bias=_f(gen.uniform(0, 0.1, 3))),
        "th": nir.Threshold(threshold=_f(np.full((3, 6, 6), 0.7))),
        "sp": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "fl": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
        "w": nir.Linear(weight=_f(gen.uniform(-0.3, 0.3, (4, 27)))),
        "lif": nir.LIF(tau=_f(np.full(4, 2.0)), r=_f(np.full(4, 2.0)), v_leak=_f(np.zeros(4)),
                       v_threshold=_f(np.full(4, 2.0)), v_reset=_f(np.zeros(4))),
        "out": nir.Output(output_type=np.array([4])),
    }
    g = nir.NIRGraph(nodes, [("in", "c"), ("c", "th"), ("th", "sp"), ("sp", "fl"), ("fl", "w"), ("w", "lif"),
                             ("lif", "out")])
    T = 6
    imported = NI.import_graph(g, dt=1.0, T=T)
    assert "avgpool(" in imported.text and "tau = 1.0" in imported.text
    x = torch.rand(16, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    module = nir_run.to_torch(g, 1.0)
    state, outs = None, []
    for _ in range(T):
        o, state = module(x, state)
        outs.append(o)
    expected = torch.stack(outs).mean(0)
    with torch.no_grad():
        got = imported.network()(x)
    assert 0 < expected.mean() < 1
    assert _rel(got, expected) <= 1e-5


@pytest.mark.parametrize("node, words", [
    (lambda: nir.LI(tau=_f([2.0] * 3), r=_f([1.0] * 3), v_leak=_f([0.0] * 3)), "'n' (LI)"),
    (lambda: nir.CubaLIF(tau_syn=_f([2.0] * 3), tau_mem=_f([2.0] * 3), r=_f([1.0] * 3), v_leak=_f([0.0] * 3),
                         v_threshold=_f([1.0] * 3)), "'n' (CubaLIF)"),
])
def test_nodes_without_an_eidsl_counterpart_are_refused_by_name(tmp_path, node, words):
    g = nir.NIRGraph({"in": nir.Input(input_type=np.array([4])), "w": nir.Linear(weight=_f(np.ones((3, 4)))),
                      "n": node(), "out": nir.Output(output_type=np.array([3]))},
                     [("in", "w"), ("w", "n"), ("n", "out")])
    path = tmp_path / "g.nir"
    nir.write(path, g)
    res = runner.invoke(app, ["import", "nir", str(path), "-o", str(tmp_path / "o"), "--dt", "1"])
    assert res.exit_code == 2
    assert words in res.output and "cannot be imported" in res.output
    assert not (tmp_path / "o").exists()


def test_per_neuron_time_constants_are_refused_by_name():
    g = nir.NIRGraph({"in": nir.Input(input_type=np.array([2])), "w": nir.Linear(weight=_f(np.ones((2, 2)))),
                      "lif": nir.LIF(tau=_f([2.0, 3.0]), r=_f([1.0, 1.0]), v_leak=_f([0, 0]),
                                     v_threshold=_f([1, 1]), v_reset=_f([0, 0])),
                      "out": nir.Output(output_type=np.array([2]))}, [("in", "w"), ("w", "lif"), ("lif", "out")])
    with pytest.raises(NI.NIRImportError, match="'lif': tau differs between neurons"):
        NI.import_graph(g, dt=1.0)


def test_the_old_import_command_still_works():
    res = runner.invoke(app, ["import-deepeisnn", "--help"])
    assert res.exit_code == 0 and "--spec" in res.output
    res = runner.invoke(app, ["import", "deepeisnn", "--help"])
    assert res.exit_code == 0 and "--spec" in res.output


# ---------------------------------------------------------------- eidsl -> NIR (extension) -> eidsl


SHIPPED = [
    ("specs/mlp.ei", {"depth": 2}),
    ("specs/mlp.ei", {"depth": 2, "family": "bn"}),
    ("specs/mlp.ei", {"depth": 2, "family": "plain"}),
    ("specs/convnet.ei", {"width": 4, "input": [1, 8, 8]}),
    pytest.param("specs/vgg.ei", {"depth": 8}, marks=pytest.mark.slow),           # ~10 s: 512-wide convs
    pytest.param("specs/resnet.ei", {"input": [3, 8, 8]}, marks=pytest.mark.slow),  # ~25 s: 11 M parameters
    ("specs/motifs/divisive.ei", {"widths": [24, 12]}),
    ("specs/motifs/ratio.ei", {"widths": [24, 12]}),
    ("specs/motifs/recurrent_inhibition.ei", {}),
    ("specs/motifs/recurrent_inhibition.ei", {"loop": True}),
    ("specs/motifs/recurrent_inhibition_loop.ei", {"hidden": [16, 8]}),
    ("specs/motifs/shared_inhibition.ei", {"n1": 16, "n2": 8}),
    ("specs/motifs/spiking_interneurons.ei", {"widths": [24, 12]}),
    ("specs/motifs/subtractive.ei", {}),
    ("tests/specs/subtractive.ei", {}),
]


def _exported(spec, params, tmp_path, seed=5):
    graph = load_graph(ROOT / spec, memory_limit=math.inf, **params)
    net = build_graph(graph, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():       # values away from their initial ones, as after training
        for _, p in net.named_parameters():
            p.mul_(1 + 0.2 * torch.rand(p.shape, generator=gen))
        for name, b in net.named_buffers():
            if b.is_floating_point():
                b.add_(0.1 * torch.rand(b.shape, generator=gen))
        net.clamp_()
    net.eval()
    ex = NX.export(graph, net, trained=True, weights="test values", lossy=True, source=spec)
    path = tmp_path / "net.nir"
    NX.write(ex, path)
    return graph, net, path, ex


def _id(case) -> str:
    spec, params = case.values if hasattr(case, "values") else case
    return f"{spec.split('/')[-1]}-{params}"


@pytest.mark.parametrize("spec, params", SHIPPED, ids=[_id(c) for c in SHIPPED])
def test_round_trip_through_the_extension_is_exact(tmp_path, spec, params):
    graph, net, path, _ = _exported(spec, params, tmp_path)
    imported = NI.import_graph(NI.read(path), source=path.name)
    assert imported.exact
    again = imported.network()
    shape = graph.node(graph.input_name).shape
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(7))
    if graph.node(graph.input_name).encoding == "events":
        x = torch.rand(3, graph.node(graph.input_name).T, *shape)
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    # The written spec is a spec: it checks on its own and names the same tensors as the weights file.
    assert set(again.state_dict()) == set(imported.state)


def test_plain_consumers_get_the_lossy_graph_and_eidsl_the_exact_one(tmp_path):
    """Divisive VGG-like MLP: the NIR nodes alone drop the divisor (measured here), the extension does not."""
    graph, net, path, _ = _exported("specs/motifs/divisive.ei", {"widths": [24, 12]}, tmp_path)
    g = NI.read(path)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        exact = net(x)
        lossy = nir_run.run(g, x, T=graph.node("input").T)
        back = NI.import_graph(g).network()(x)
    assert torch.equal(back, exact)
    assert (lossy - exact).abs().max() > 1e-2            # the honest lossy graph differs, measurably


def test_an_edited_nir_graph_is_not_silently_replaced_by_its_extension(tmp_path):
    _, _, path, ex = _exported("tests/specs/subtractive.ei", {}, tmp_path)
    g = ex.graph
    g.nodes["sub_layer_1.E.W_EE"].weight = g.nodes["sub_layer_1.E.W_EE"].weight * 2
    edited = tmp_path / "edited.nir"
    nir.write(edited, g)
    res = runner.invoke(app, ["import", "nir", str(edited), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "NIR node 'sub_layer_1.E.W_EE' differs from what its eidsl-ei/1 extension describes" in res.output


RESIDUAL = """
motif plain(x, n, tau = 2.0) {
    pop E = lif(n, tau = tau)
    x -> E : conv(3, 1, 1, init = default, bias = true)
    return E
}

network residual(T = 4, input = [2, 6, 6]) {
    a = plain(image(input), 4)
    b = plain(a, 4, tau = 3.0)
    h = flatten(avgpool(a + b, 2))
    pop O = current(3)
    h -> O : dense(init = default, bias = true)
    return readout(O)
}
"""


@pytest.mark.parametrize("case", ["mlp-plain", "mlp-bn", "residual"])
def test_soft_reset_lif_and_spike_sums_of_a_plain_nir_graph(tmp_path, case):
    """NIR says reset-by-subtraction as LI -> Threshold -> Scale -> LI (eidsl's export writes it so):
    imported without the extension, such graphs run as eidsl's soft-reset LIF, spike for spike."""
    if case == "residual":
        spec = tmp_path / "residual.ei"
        spec.write_text(RESIDUAL)
        graph = load_graph(spec)
    else:
        graph = load_graph(ROOT / "specs/mlp.ei", depth=2, family=case.split("-")[1], input=[1, 8, 8])
    net = build_graph(graph, seed=3)
    with torch.no_grad():
        for name, b in net.named_buffers():
            if b.is_floating_point():
                b.add_(0.1 * torch.rand(b.shape, generator=torch.Generator().manual_seed(1)))
        for _, p in net.named_parameters():
            p.mul_(4.0 if case == "residual" else 1.5)      # busy enough to compare spikes
    net.eval()
    ex = NX.export(graph, net, trained=True, weights="test", source=case)
    imported = NI.import_graph(ex.graph, plain=True)
    assert not imported.exact and "reset by subtraction" in " ".join(imported.notes)
    from eidsl import ir
    assert {r.reset for _, r in imported.graph.nodes(ir.Population) if r.model == "lif"} == {"soft"}
    if case == "residual":
        assert any(True for _ in imported.graph.nodes(ir.Sum))
    x = torch.rand(32, *graph.node("input").shape, generator=torch.Generator().manual_seed(4))
    back = imported.network()
    with torch.no_grad():
        env, env2 = net.run(x, keep=True), back.run(x, keep=True)
        ref, got = net(x), back(x)
    mine = [n for n, r in graph.nodes(ir.Population) if r.model == "lif"]
    theirs = [n for n, r in imported.graph.nodes(ir.Population) if r.model == "lif"]
    for a, b in zip(mine, theirs):
        assert 0.02 < env[a].mean() < 0.98, a
        assert torch.equal(env[a], env2[b]), a
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_an_ei_circuit_without_its_extension_is_refused_by_name(tmp_path):
    """NIR has no rectifier: the interneurons arrive as a Scale between two weights."""
    out = tmp_path / "s.nir"
    assert runner.invoke(app, ["export", "nir", str(ROOT / "tests/specs/subtractive.ei"), "--no-extension",
                               "-o", str(out)]).exit_code == 0
    assert "eidsl.extension" not in nir.read(out).metadata
    res = runner.invoke(app, ["import", "nir", str(out), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "NIR node 'sub_layer_1.E.W_EI' (Conv2d) follows another weight with no neuron between" in res.output
