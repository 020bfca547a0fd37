"""NIR export: the LIF mapping simulated both ways, exports run by nirtorch against eidsl, lossiness reports."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")

from typer.testing import CliRunner  # noqa: E402

from eidsl.interop import nir_export as NX  # noqa: E402
from eidsl.interop import nir_run
from eidsl_compiler import ops  # noqa: E402
from eidsl import ir  # noqa: E402
from eidsl.api import build_graph, load_graph  # noqa: E402
from eidsl.cli import app  # noqa: E402

from conftest import ROOT, SPECS  # noqa: E402

SUBTRACTIVE = ROOT / "tests" / "specs" / "subtractive.ei"
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<what>.+) is not expressible in NIR: (?P<why>.+)$")
runner = CliRunner()


def _lif_graph(shape, tau, theta, reset, v_reset=0.0, dt=1.0):
    nodes, edges = NX.lif_nodes("E", shape, tau, theta, reset, v_reset, dt)
    entry = "E.v" if reset == "soft" else "E"
    nodes = {"input": nir.Input(input_type=np.array(shape)), **nodes, "output": nir.Output(np.array(shape))}
    return nir.NIRGraph(nodes, [("input", entry), *edges, ("E", "output")], type_check=True)


def _simulate(graph, currents, dt=1.0):
    module = nir_run.to_torch(graph, dt)
    state, spikes = None, []
    for t in range(currents.shape[0]):
        out, state = module(currents[t], state)
        spikes.append(out)
    return torch.stack(spikes)


@pytest.mark.parametrize("tau, theta", [(2.0, 1.0), (3.0, 0.5), (1.5, 2.0)])
@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_nir_lif_parameters_reproduce_the_eidsl_lif(tau, theta, reset):
    """tau_N = tau dt, r = tau, v_leak = 0, threshold one float32 below theta, soft reset as feedback."""
    T, n = 24, 200
    gen = torch.Generator().manual_seed(1)
    currents = torch.rand(T, 4, n, generator=gen) * 2 * theta - 0.3 * theta
    expected = ops.lif(currents.reshape(T * 4, n), T, tau, theta, reset, v_reset=0.0).view(T, 4, n)
    got = _simulate(_lif_graph((n,), tau, theta, reset), currents)
    assert 0.1 < expected.mean() < 0.9                      # the neurons fire, and not always
    assert torch.equal(got, expected)
    # A time step of dt: the same dynamics, rescaled time constants.
    got = _simulate(_lif_graph((n,), tau, theta, reset, dt=1e-3), currents, dt=1e-3)
    assert torch.equal(got, expected)


def test_nir_lif_alone_would_lose_the_soft_reset():
    """The plain NIR LIF (hard reset) differs from eidsl's soft reset: the feedback is needed."""
    T, n, tau, theta = 24, 200, 2.0, 1.0
    currents = torch.rand(T, 4, n, generator=torch.Generator().manual_seed(2)) * 2.5
    soft = ops.lif(currents.reshape(T * 4, n), T, tau, theta, "soft").view(T, 4, n)
    hard_nir = _simulate(_lif_graph((n,), tau, theta, "hard"), currents)
    assert (hard_nir != soft).float().mean() > 0.05


def test_threshold_is_reached_at_equality_as_in_eidsl():
    """eidsl fires on v >= theta, NIR on v > v_threshold: a current of exactly theta must fire."""
    currents = torch.full((3, 1, 5), 1.0)
    expected = ops.lif(currents.reshape(3, 5), 3, 2.0, 1.0, "soft").view(3, 1, 5)
    assert expected[0].eq(1).all()
    assert torch.equal(_simulate(_lif_graph((5,), 2.0, 1.0, "soft"), currents), expected)
    assert NX.fires_at(1.0) < np.float32(1.0) and np.nextafter(NX.fires_at(1.0), np.float32(2)) == 1.0


def _save(net, path: Path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))


def _trained_like(seed=3):
    """The subtractive test network with weights moved off their initial values, as training would."""
    graph = load_graph(SUBTRACTIVE)
    net = build_graph(graph, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.mul_(1 + 0.2 * torch.rand(p.shape, generator=gen))
        net.clamp_()
    return graph, net


def test_subtractive_network_runs_in_nirtorch_as_in_eidsl(tmp_path):
    graph, net = _trained_like()
    ckpt = tmp_path / "w.safetensors"
    _save(net, ckpt)
    out = tmp_path / "net.nir"
    res = runner.invoke(app, ["export", "nir", str(SUBTRACTIVE), "--weights", str(ckpt), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "trained values from" in res.output
    assert "not expressible (" not in res.output and "0 construct(s) not expressible" in res.output

    g = nir.read(out, type_check=True)
    g.validate_structure()
    g.infer_types()
    assert g.check_types()
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert {"Conv2d", "Linear", "Affine", "LI", "Threshold", "LIF", "AvgPool2d", "Flatten", "Scale", "I"} <= kinds
    # Inhibitory edges carry negative weights; excitatory ones non-negative (Dale's law).
    assert (g.nodes["sub_layer_1.E.W_EI"].weight < 0).all() and (g.nodes["sub_layer_3.E.W_EI"].weight < 0).all()
    assert (g.nodes["sub_layer_1.I.W_IE"].weight >= 0).all()

    x = torch.rand(16, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        env = net.run(x, keep=True)
    module = nir_run.to_torch(g)
    state, T = None, graph.node("input").T
    spikes = {name: [] for name in ("sub_layer_1.E", "sub_layer_2.E")}
    for _ in range(T):
        logits, state = module(x, state)
        for name in spikes:
            spikes[name].append(state[name.replace(".", "_") + "_prev_output"].clone())
    for name, seq in spikes.items():
        ref = ops.unfold_time(env[name], T)
        assert 0.05 < ref.mean() < 0.95, name               # spiking, so the comparison means something
        assert torch.equal(torch.stack(seq), ref), name     # identical spike trains
    assert torch.allclose(logits, env[net.plan.output], rtol=0, atol=1e-5)


def test_run_folder_exports_its_newest_checkpoint(tmp_path):
    graph, net = _trained_like(seed=4)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _save(net, run / "checkpoints" / "epoch_2.safetensors")
    with torch.no_grad():
        net.tensor("sub_layer_1.E.W_EE").mul_(2)
    _save(net, run / "checkpoints" / "epoch_1.safetensors")     # written last: the newest
    os.utime(run / "checkpoints" / "epoch_2.safetensors", (1_000_000, 1_000_000))
    out = tmp_path / "net.nir"
    res = runner.invoke(app, ["export", "nir", str(SUBTRACTIVE), "--weights", str(run), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "epoch_1.safetensors" in res.output
    g = nir.read(out)
    g_E = net.tensor("sub_layer_1.E.g_E").detach()
    expected = net.tensor("sub_layer_1.E.W_EE").detach() * g_E.view(-1, 1, 1, 1)
    np.testing.assert_allclose(g.nodes["sub_layer_1.E.W_EE"].weight, expected.numpy(), rtol=1e-6)


def test_bad_weights_are_refused_with_a_message(tmp_path):
    out = tmp_path / "net.nir"
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    other = build_graph(load_graph(SPECS / "mlp.ei", depth=2))
    _save(other, tmp_path / "other.safetensors")
    for weights, message in [(tmp_path / "empty", "no checkpoints/*.safetensors"),
                             (tmp_path / "junk.safetensors", "not a readable safetensors file"),
                             (tmp_path / "other.safetensors", "not a state dict of this network"),
                             (tmp_path / "missing.safetensors", "no such weights file")]:
        res = runner.invoke(app, ["export", "nir", str(SUBTRACTIVE), "--weights", str(weights), "-o", str(out)])
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.split())
        assert not out.exists()


def _divisive_edges(graph):
    return [(s, d, e) for s, d, e in graph.edges(ir.Inhibition) if e.divisive]


def test_vgg_report_names_every_divisive_node_with_its_location():
    graph = load_graph(SPECS / "vgg.ei")
    net = build_graph(graph)
    found = NX.losses(graph, net, trained=False)
    blocking = [x for x in found if x.blocking]
    divisive = _divisive_edges(graph)
    assert len(divisive) == 5 and len(blocking) == len(divisive)
    for (src, dst, edge), loss in zip(divisive, blocking):
        m = LINE.match(loss.line())
        assert m, loss.line()
        assert Path(m["file"]).resolve() == Path(edge.loc.file).resolve()
        assert (int(m["line"]), int(m["col"])) == (edge.loc.line, edge.loc.column)
        assert f"'{src} -| {dst}'" in m["what"] and "divisive" in m["what"]
    # The stdlib line of `I -| E : inhibit(sub = true, div = true, ...)`.
    text = Path(divisive[0][2].loc.file).read_text().splitlines()[divisive[0][2].loc.line - 1]
    assert "div = true" in text
    # Every line of the report, blocking or not, has the located format.
    assert all(LINE.match(x.line()) for x in found)
    assert any("data-dependent init 'ei_balanced'" in x.line() for x in found)
    assert not any("data-dependent" in x.line() for x in NX.losses(graph, net, trained=True))


def test_export_refuses_divisive_networks_unless_lossy(tmp_path):
    out = tmp_path / "vgg.nir"
    res = runner.invoke(app, ["export", "nir", str(SPECS / "vgg.ei"), "-o", str(out)])
    assert res.exit_code == 2
    assert not out.exists() and not list(tmp_path.iterdir())
    flat = " ".join(res.output.split())
    assert "5 construct(s) above are not expressible in NIR; nothing written" in flat
    assert flat.count("divisive (shunting) inhibition") == 5

    res = runner.invoke(app, ["export", "nir", str(SPECS / "vgg.ei"), "--lossy", "--samples", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.count("divisor replaced by 1") == 5
    # No CIFAR-10 files here (the spec's data set): measured on random inputs, and the report says so.
    if "random inputs" in res.output.splitlines()[0]:
        assert "4 random inputs (the spec's data set 'cifar10' could not be used" in " ".join(res.output.split())
    assert "data-free initial values (seed 0)" in res.output
    g = nir.read(out, type_check=True)
    assert g.check_types()
    assert g.metadata["substituted"].count("divisor replaced by 1") == 5
    assert g.metadata["network"] == "vgg" and g.metadata["T"] == "4"
    # The closest graph: g_E (I_EE - W_EI s_I) + b_E into every E layer.
    assert g.nodes["layer_3.E.W_EI"].weight.shape == (256, 64, 1, 1)
    assert ("layer_3.E.W_EI", "layer_3.E.v") in g.edges and ("layer_3.I", "layer_3.E.W_EI") in g.edges


@pytest.mark.parametrize("spec, sets", [
    ("mlp.ei", ["depth=2"]),
    ("mlp.ei", ["depth=2", "family=bn"]),
    ("mlp.ei", ["depth=2", "family=plain"]),
    ("resnet.ei", ["family=plain", "input=[3, 8, 8]"]),
])
def test_exports_read_back_and_pass_nir_validation(tmp_path, spec, sets):
    out = tmp_path / "net.nir"
    args = ["export", "nir", str(SPECS / spec), "--lossy", "-o", str(out)]
    for s in sets:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    g = nir.read(out, type_check=True)
    g.validate_structure()
    assert g.check_types()
    graph = load_graph(SPECS / spec, sets=dict(s.split("=", 1) for s in sets))
    assert list(g.nodes["output"].output_type["output"]) == [graph.params["classes"]]
    assert tuple(g.nodes["input"].input_type["input"]) == graph.node("input").shape


def test_plain_and_batchnorm_networks_run_as_in_eidsl(tmp_path):
    """BatchNorm folded with its running statistics; projection biases in Affine nodes."""
    for family in ("bn", "plain"):
        graph = load_graph(SPECS / "mlp.ei", sets={"depth": "2", "family": family})
        net = build_graph(graph, seed=5)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, buf in net.named_buffers():
                if name.endswith("running_mean"):
                    buf.uniform_(-0.1, 0.1, generator=gen)
                elif name.endswith("running_var"):
                    buf.uniform_(0.5, 2.0, generator=gen)
        net.eval()
        result = NX.export(graph, net, trained=True, weights="test")
        assert not result.blocking
        x = torch.rand(8, 1, 28, 28, generator=gen) * 3
        with torch.no_grad():
            env = net.run(x, keep=True)
        assert 0.05 < env["layer_1.E"].mean() < 0.95
        got = nir_run.run(result.graph, x, graph.node("input").T)
        assert torch.allclose(got, env[net.plan.output], atol=1e-5, rtol=0), family


def test_rectifier_that_can_act_is_reported(tmp_path):
    spec = tmp_path / "free_relu.ei"
    spec.write_text("""
network free_relu(T = 2) {
    x = flatten(image([1, 4, 4]))
    exc E = lif(8)
    inh I = relu(2, dale = false)
    x -> E : dense(init = abs_default)
    x -> I : dense(init = uniform(-1, 1))
    I -| E : inhibit(sub = true, div = false, init = 0.1)
    return readout(E)
}
""")
    out = tmp_path / "x.nir"
    res = runner.invoke(app, ["export", "nir", str(spec), "-o", str(out)])
    assert res.exit_code == 2 and not out.exists()
    flat = " ".join(res.output.split())
    assert f"{spec}:5:5: rectifying interneurons 'I' (relu) is not expressible in NIR" in flat
    assert "'I.W_IE' has negative entries" in flat
    res = runner.invoke(app, ["export", "nir", str(spec), "--lossy", "-o", str(out)])
    assert res.exit_code == 0
    assert "'I' passes its current through unrectified (identity)" in res.output


def test_delayed_projection_becomes_a_nir_delay(tmp_path):
    spec = tmp_path / "delayed.ei"
    spec.write_text("""
network delayed(T = 5) {
    x = flatten(image([1, 4, 4]))
    exc A = lif(12)
    exc B = lif(6)
    x -> A : dense(init = abs_default)
    A -> B : dense(init = abs_default, delay = 2)
    return readout(B)
}
""")
    graph = load_graph(spec)
    net = build_graph(graph, seed=2)
    with torch.no_grad():
        net.tensor("B.W_EE").mul_(3)
    result = NX.export(graph, net, trained=True, weights="test")
    assert isinstance(result.graph.nodes["B.W_EE.delay"], nir.Delay)
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2
    with torch.no_grad():
        expected = net(x)
    assert expected.abs().sum() > 0
    assert torch.allclose(nir_run.run(result.graph, x, 5), expected, atol=1e-6)


def test_lossy_export_measures_its_deviation_first(tmp_path):
    """The measured cost heads the report: logits and accuracy of the exported graph against eidsl's
    on the same test samples, recomputed here from the written file."""
    from eidsl.data import datasets
    out = tmp_path / "mlp.nir"
    args = ["export", "nir", str(SPECS / "mlp.ei"), "--set", "depth=2", "--set", "input=[1,8,8]", "--lossy",
            "--data", "digits", "--samples", "64", "--seed", "3", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    head = " ".join(lines[0].split())
    assert head.startswith("measured deviation of the exported graph from eidsl on 64 digits test samples")

    graph = load_graph(SPECS / "mlp.ei", sets={"depth": "2", "input": "[1,8,8]"})
    net = build_graph(graph, seed=3).eval()
    _, test, _ = datasets.load("digits", T=4, augment=False)
    x = torch.stack([test[i][0] for i in range(64)])
    y = torch.tensor([test[i][1] for i in range(64)])
    with torch.no_grad():
        ours = net(x)
    theirs = nir_run.run(nir.read(out), x, 4)
    rel = float((theirs - ours).abs().max() / ours.abs().max())
    assert rel > 0.01      # the divisor is gone: the graph does differ
    acc_ours, acc_theirs = (float((o.argmax(1) == y).float().mean()) for o in (ours, theirs))
    assert f"logits relative error {rel:.3g}" in head
    assert f"accuracy {100 * acc_ours:.1f}% in eidsl, {100 * acc_theirs:.1f}% as exported" in head
    assert nir.read(out).metadata["deviation"].startswith("64 digits test samples")
    # Training-only rules stay out of the way unless asked for.
    assert "training of" not in res.output and "--verbose lists them" in " ".join(res.output.split())
    verbose = runner.invoke(app, args + ["--verbose"])
    assert verbose.exit_code == 0 and "training of 'layer_1.E'" in verbose.output


def test_deviation_of_an_exact_export_is_zero():
    from eidsl.interop.nir_deviation import measure
    graph = load_graph(SPECS / "mlp.ei", sets={"depth": "2", "family": "plain"})
    net = build_graph(graph, seed=1).eval()
    result = NX.export(graph, net, trained=True, weights="test")
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 3
    dev = measure(graph, net, result.graph, x, None, "16 random inputs")
    assert dev.rel_error < 1e-5 and dev.agree == 1.0 and dev.acc_eidsl is None
