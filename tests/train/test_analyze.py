"""`eidsl analyze`: operation counts checked against hand calculations on tiny specs with fixed
spikes, energy = counts x table, and the analysis of real runs of every shipped spec."""
import json

import pytest
import torch

import eidsl
from eidsl.train import analyze as an
from eidsl.api import build_graph, ei_init, load_graph

from conftest import SPECS

MLP = """
import "std"
network tiny(T = 2) {
    h = flatten(image([1, 2, 2]))
    h = ei_layer(h, 4, ratio = 2)
    return readout(ei_readout(h, 2, ratio = 2))
}
"""

CONV = """
import "std"
network strided(T = 2) {
    x = image([1, 5, 5])
    pop A = lif(2)
    pop B = lif(3)
    x -> A : conv(1, 1, 0, init = abs_default)
    A -> B : conv(3, 2, 1, init = abs_default)
    return readout(plain_readout(flatten(B), 2))
}
"""

RECURRENT = """
import "recurrent_inhibition_loop"
network rec(T = 3) {
    h = flatten(image([1, 2, 2]))
    h = recurrent_inhibition_loop(h, 4)
    return readout(ei_readout(h, 2))
}
"""

RESIDUAL = """
import "std"
network res(T = 2) {
    x = image([1, 4, 4])
    pop A = lif(2)
    pop B = lif(2)
    pop C = lif(1)
    x -> A : conv(3, 1, 1, init = abs_default)
    A -> B : conv(3, 1, 1, init = abs_default)
    h = B + A
    h -> C : conv(1, 1, 0, init = abs_default)
    return readout(plain_readout(flatten(C), 2))
}
"""


def graph_of(tmp_path, text):
    spec = tmp_path / "net.ei"
    spec.write_text(text)
    return load_graph(spec, include=[SPECS / "motifs"])


def rows(graph, env, batch=1):
    """{(layer, pathway): per-inference ops} from count_ops."""
    return {(e.layer, e.pathway): e.per_inference for e in an.count_ops(graph, env, batch)}


def ops(**given):
    out = dict.fromkeys(an.OPS, 0.0)
    out.update({k: float(v) for k, v in given.items()})
    return out


def test_two_layer_mlp_counts_by_hand(tmp_path):
    g = graph_of(tmp_path, MLP)
    T = 2
    # E spikes of the hidden layer, (T*B, 4): 2 at t=0, 3 at t=1.
    spikes = torch.tensor([[1., 0, 1, 0], [1, 1, 1, 0]])
    r = rows(g, {"ei_layer_1.E": spikes})
    L, O = "ei_layer_1", "ei_readout_1"
    # Pixels are not spikes: dense MACs, 4 inputs to 4 E and 2 I neurons, every step.
    assert r[(L, "x->E")] == ops(macs=4 * 4 * T)
    assert r[(L, "x->I")] == ops(macs=2 * 4 * T)
    # ReLU interneurons are not spikes either: W_EI s_I is 4x2 MACs a step per path.
    assert r[(L, "I-|E sub")] == ops(macs=4 * 2 * T, adds=4 * T)
    assert r[(L, "I-|E div")] == ops(macs=4 * 2 * T, mults=2 * T, cmps=2 * 4 * T, divs=4 * T)
    # g_E, b_E, then the LIF: leak, integrate, compare, and one subtraction per spike (5).
    assert r[(L, "E neuron")] == ops(mults=4 * T + 4 * T, adds=4 * T + 4 * T + 5, cmps=4 * T)
    assert r[(L, "I neuron")] == ops(cmps=2 * T)
    # Readout layer: 5 spikes, each reaching 2 O neurons and 1 interneuron.
    assert r[(O, "x->E")] == ops(acs=5 * 2)
    assert r[(O, "x->I")] == ops(acs=5 * 1)
    assert r[(O, "I-|E sub")] == ops(macs=2 * 1 * T, adds=2 * T)
    assert (O, "I-|E div") not in r               # the readout circuit does not divide
    assert r[(O, "I neuron")] == ops(cmps=1 * T)
    assert r[("readout_1", "readout")] == ops(adds=2 * (T - 1), mults=2)


def test_two_layer_mlp_ann_counts(tmp_path):
    g = graph_of(tmp_path, MLP)
    entries = {(e.layer, e.pathway): e.ann for e in an.count_ops(g, {"ei_layer_1.E": torch.zeros(2, 4)}, 1)}
    assert entries[("ei_readout_1", "x->E")] == ops(macs=4 * 2)     # one dense pass, spikes or not
    assert entries[("ei_layer_1", "E neuron")] == ops(mults=4, adds=4, cmps=4)   # g_E, b_E, ReLU


def test_strided_padded_conv_fan_out_by_hand(tmp_path):
    g = graph_of(tmp_path, CONV)
    A = torch.zeros(2, 2, 5, 5)          # (T*B, C, H, W)
    # Stride 2, padding 1, 3x3 on 5x5 -> 3x3. Input row/col i reaches outputs o with 2o-1 <= i <= 2o+1:
    # i = 0, 2, 4 reach one output, i = 1, 3 reach two.
    A[0, 0, 0, 0] = 1     # 1 x 1 positions
    A[0, 1, 1, 3] = 1     # 2 x 2
    A[1, 0, 2, 2] = 1     # 1 x 1
    A[1, 1, 4, 1] = 1     # 1 x 2
    B = torch.zeros(2, 3, 3, 3)
    B[0, 0, 0, 0] = B[1, 2, 1, 1] = 1
    r = rows(g, {"A": A, "B": B})
    assert r[("B", "x->E")] == ops(acs=(1 + 4 + 1 + 2) * 3)          # 3 output channels
    assert r[("A", "x->E")] == ops(macs=2 * 5 * 5 * 1 * 2)           # 1x1 conv of pixels, T = 2
    assert r[("B", "E neuron")] == ops(mults=27 * 2, adds=27 * 2 + 2, cmps=27 * 2)
    # The dense count includes padded positions: 27 outputs x 2 x 3 x 3 MACs for the ANN.
    ann = {(e.layer, e.pathway): e.ann for e in an.count_ops(g, {"A": A, "B": B}, 1)}
    assert ann[("B", "x->E")]["macs"] == 27 * 18


def test_acs_match_the_conv_definition_on_random_spikes():
    """The fan-out rule equals counting, per output, the non-zero inputs in its receptive field."""
    from eidsl import ir
    gen = torch.Generator().manual_seed(0)
    s = (torch.rand(3, 4, 9, 7, generator=gen) < 0.3).float()
    edge = ir.Projection(op="conv", kernel=3, stride=2, padding=1, fan_in=36)
    direct = torch.nn.functional.conv2d(s, torch.ones(5, 4, 3, 3), stride=2, padding=1).sum()
    assert an._acs(edge, s, 5) == float(direct)


def test_recurrent_loop_counts_only_delivered_spikes(tmp_path):
    g = graph_of(tmp_path, RECURRENT)
    T = 3
    E = torch.tensor([[1., 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0]])    # 2, 1, 3 spikes
    r = rows(g, {"recurrent_inhibition_loop_1.E": E})
    L = "recurrent_inhibition_loop_1"
    # E -> I through delay 1: the spikes of t = 0, 1 arrive (3 of them), those of t = 2 never do.
    assert r[(L, "recurrent")] == ops(acs=3 * 1)
    assert r[(L, "I-|E sub")] == ops(macs=4 * 1 * T, adds=4 * T)
    assert r[(L, "x->E")] == ops(macs=4 * 4 * T)
    assert r[("ei_readout_1", "x->E")] == ops(acs=6 * 2)
    assert an.recurrent_edges(g) >= {("recurrent_inhibition_loop_1.E", "recurrent_inhibition_loop_1.I")}


def test_residual_block_counts_by_hand(tmp_path):
    g = graph_of(tmp_path, RESIDUAL)
    T = 2
    A = torch.zeros(2, 2, 4, 4)
    B = torch.zeros(2, 2, 4, 4)
    A[0, 0, 0, 0] = A[0, 1, 1, 1] = A[1, 0, 3, 3] = 1
    B[0, 0, 0, 0] = B[1, 1, 2, 2] = 1          # (0, 0, 0, 0) fires in both: the sum there is 2
    total = A + B
    r = rows(g, {"A": A, "B": B, "sum_1": total, "C": torch.zeros(2, 1, 4, 4)})
    # 3x3 stride 1 pad 1 on 4x4: a corner reaches 2x2 outputs, an inner pixel 3x3.
    assert r[("B", "x->E")] == ops(acs=(4 + 9 + 4) * 2)
    assert r[("sum_1", "residual sum")] == ops(adds=2 * 4 * 4 * T)
    # The 1x1 conv after the sum: one accumulate per non-zero entry (4 of them) per output channel.
    assert r[("C", "x->E")] == ops(acs=4 * 1)


SPIKING_I = """
import "spiking_interneurons"
network spiking(T = 2) {
    h = flatten(image([1, 2, 2]))
    return readout(classifier(spiking_ei_layer(h, 4, ratio = 2), 2))
}
"""


def test_spiking_interneurons_inhibit_by_accumulates(tmp_path):
    g = graph_of(tmp_path, SPIKING_I)
    T = 2
    E = torch.tensor([[1., 0, 0, 0], [0, 0, 0, 0]])
    I = torch.tensor([[1., 0], [1, 1]])                 # 3 interneuron spikes
    r = rows(g, {"spiking_ei_layer_1.E": E, "spiking_ei_layer_1.I": I})
    L = "spiking_ei_layer_1"
    assert r[(L, "I-|E sub")] == ops(acs=3 * 4, adds=4 * T)
    # g_I s_I for every interneuron, the divisor + 1 (epsilon rule), the division.
    assert r[(L, "I-|E div")] == ops(acs=3 * 4, mults=2 * T, adds=4 * T, divs=4 * T)
    assert r[(L, "I neuron")] == ops(mults=2 * T, adds=2 * T + 3, cmps=2 * T)


def test_batch_normalises_counts_per_sample(tmp_path):
    g = graph_of(tmp_path, MLP)
    one = torch.tensor([[1., 0, 1, 0], [1, 1, 1, 0]])
    # Two samples, time-major (t0 s0, t0 s1, t1 s0, t1 s1): 5 and 1 spikes, mean 3 per sample.
    two = torch.stack([one[0], torch.tensor([0., 0, 0, 1]), one[1], torch.zeros(4)])
    assert rows(g, {"ei_layer_1.E": two}, batch=2)[("ei_readout_1", "x->E")] == ops(acs=3 * 2)


def test_energy_is_counts_times_table(tmp_path):
    g = graph_of(tmp_path, MLP)
    spikes = torch.tensor([[1., 0, 1, 0], [1, 1, 1, 0]])
    entries = an.count_ops(g, {"ei_layer_1.E": spikes}, 1)
    table = an.energy_table({"mac": 2.0, "acs": 0.5, "divs": 7.0})
    s = an.summarize_ops(entries, 2, table)
    want = sum(e.per_inference[k] * table[k] for e in entries for k in an.OPS)
    assert s["total"]["energy_pj"] == pytest.approx(want)
    assert s["total"]["energy_pj"] == pytest.approx(sum(s["total"][k] * table[k] for k in an.OPS))
    assert s["total"]["energy_pj_per_step"] == pytest.approx(want / 2)
    assert s["by_layer"]["ei_layer_1"]["per_step"]["macs"] == s["by_layer"]["ei_layer_1"]["macs"] / 2
    assert s["by_population"]["E"]["energy_pj"] + s["by_population"]["I"]["energy_pj"] == pytest.approx(want)
    sub = next(p for p in s["pathways"] if p["pathway"] == "I-|E sub" and p["layer"] == "ei_layer_1")
    assert sub["per_inference"]["energy_pj"] == 16 * 2.0 + 8 * 0.9
    assert sub["per_step"]["macs"] == 8
    # --memory: one weight fetch per MAC or AC, a membrane read and write per LIF neuron per step.
    m = an.summarize_ops(entries, 2, table, memory=True)["by_layer"]["ei_layer_1"]
    assert m["memory_accesses"] == m["macs"] + m["acs"] + 2 * 4 * 2
    with pytest.raises(an.AnalysisError, match="unknown operation"):
        an.energy_table({"flops": 1.0})


def test_bn_and_plain_families_are_counted_the_same_way():
    g_bn = load_graph(SPECS / "mlp.ei", {"family": "bn", "depth": "2"})
    g_plain = load_graph(SPECS / "mlp.ei", {"family": "plain", "depth": "2"})
    env = {"layer_1.E": torch.zeros(4, 500)}
    env["layer_1.E"][0, :7] = 1
    bn, plain = rows(g_bn, env), rows(g_plain, env)
    assert bn[("layer_1", "x->E")] == plain[("layer_1", "x->E")] == ops(macs=500 * 784 * 4, adds=500 * 4)
    assert bn[("classifier_1", "x->E")] == plain[("classifier_1", "x->E")] == ops(acs=7 * 10, adds=10 * 4)
    # The folded BatchNorm's shift is the only difference: one add per neuron per step.
    assert bn[("layer_1", "E neuron")]["adds"] - plain[("layer_1", "E neuron")]["adds"] == 500 * 4


def test_svd_entropy():
    assert an.svd_entropy(torch.ones(8)) == pytest.approx(1.0)
    assert an.svd_entropy(torch.tensor([1.0, 0, 0, 0])) == 0.0
    s = torch.tensor([3.0, 1.0])
    p = s / 4
    assert an.svd_entropy(s) == pytest.approx(float(-(p * p.log()).sum() / torch.log(torch.tensor(2.0))))


def test_analyze_real_network_agrees_with_its_own_spikes(tmp_path):
    g = graph_of(tmp_path, MLP)
    net = build_graph(g)
    x = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    ei_init(net, x)
    result = an.analyze(net, x, with_spectra=True)
    env = net.run(x, keep=True)
    n_spikes = float(env["ei_layer_1.E"].detach().sum()) / 5
    readout = next(p for p in result["ops"]["pathways"] if p["layer"] == "ei_readout_1" and p["pathway"] == "x->E")
    assert readout["per_inference"]["acs"] == pytest.approx(n_spikes * 2)
    rates = result["firing_rates"]
    assert rates["ei_layer_1.E"]["rate"] == pytest.approx(float(env["ei_layer_1.E"].mean()))
    assert rates["ei_layer_1.I"]["side"] == "I"
    cur = result["currents"]["ei_layer_1.E"]
    assert set(cur) >= {"I_EE", "I_sub", "I_div", "I_int", "v_over_theta", "balance"}
    assert 0 <= result["spectra"]["ei_layer_1.E"]["svd_entropy"] <= 1


@pytest.mark.parametrize("spec", ["mlp.ei", "convnet.ei", "motifs/divisive.ei", "motifs/ratio.ei",
                                  "motifs/recurrent_inhibition.ei", "motifs/recurrent_inhibition_loop.ei",
                                  "motifs/shared_inhibition.ei", "motifs/spiking_interneurons.ei",
                                  "motifs/subtractive.ei"])
def test_every_shipped_spec(spec):
    g = load_graph(SPECS / spec)
    net = build_graph(g)
    x = torch.zeros(4, *g.node(g.input_name).shape)
    x[:, :, 8:20, 8:20] = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    ei_init(net, x)
    result = an.analyze(net, x, with_spectra=True, memory=True)
    json.dumps(result, allow_nan=True)
    t = result["ops"]["total"]
    assert t["energy_pj"] > 0 and t["ann_energy_pj"] > 0 and t["memory_accesses"] > 0
    assert set(result["firing_rates"]) == {n for n, _ in g.nodes(eidsl.ir.Population)}
    assert result["spectra"]


# ---------------------------------------------------------------- the command and the monitor

TINY_ARGS = ["--set", "depth=2", "--set", "input=[1,8,8]"]


def cli(*args):
    from typer.testing import CliRunner

    from eidsl.cli import app
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_on_a_spec_writes_json_and_figures(tmp_path):
    out = tmp_path / "an"
    code, output = cli("analyze", SPECS / "mlp.ei", *TINY_ARGS, "--init", "--data", "digits", "--samples", 16,
                       "--threads", 1, "--energy", "mac=2", "--memory", "-o", out)
    assert code == 0, output
    result = json.loads((out / "analysis.json").read_text())
    assert result["state"] == "init" and result["source"]["ei_init"]
    assert result["ops"]["energy_table_pj"]["macs"] == 2.0
    layer = result["ops"]["by_layer"]["layer_1"]
    assert layer["macs"] == (500 + 125) * 64 * 4 + 2 * 500 * 125 * 4      # x->E, x->I, W_EI twice
    assert {"macs", "acs", "energy_pj", "ann_energy_pj", "memory_accesses"} <= set(layer)
    assert set(result["firing_rates"]) == {"layer_1.E", "layer_1.I", "classifier_1.O", "classifier_1.I"}
    assert 0 < result["spectra"]["layer_1.E"]["svd_entropy"] <= 1
    assert "balance" in result["currents"]["layer_1.E"]
    for name in ("rates", "energy", "currents", "spectra"):
        assert (out / f"{name}.png").stat().st_size > 5000
    assert "SNN/ANN" in output


@pytest.mark.parametrize("args, message", [
    (["nowhere.ei"], "no such spec file"),
    ([SPECS / "mlp.ei", "--energy", "mac"], "--energy takes OP=PICOJOULES"),
    ([SPECS / "mlp.ei", "--energy", "flop=1"], "unknown operation 'flop'"),
    ([SPECS / "mlp.ei", "--data", "digits"], "expects (1, 28, 28)"),
    ([SPECS / "mlp.ei", "--data", "cifar10", "--data-dir", "/nonexistent"], "--data uniform"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, message):
    code, output = cli("analyze", *args, "-o", tmp_path / "an", "--no-plots")
    assert code == 2, output
    assert message in " ".join(output.split())


def test_training_logs_the_circuit_and_analyze_reads_the_run(tmp_path):
    from eidsl.train.config import TrainConfig
    from eidsl.train.circuit_log import read_log
    from eidsl.train.trainer import Trainer
    graph = load_graph(SPECS / "mlp.ei", {"depth": "2", "input": "[1,8,8]"})
    cfg = TrainConfig(data="digits", epochs=1, batch_size=128, lr=0.01, seed=7, threads=1, circuit_every=3)
    run = tmp_path / "run"
    trainer = Trainer(graph, cfg, run, spec=str(SPECS / "mlp.ei"), log=lambda line: None)
    trainer.start()
    trainer.fit()
    records = read_log(run)
    assert [r["step"] for r in records] == list(range(0, trainer.iters_per_epoch, 3))
    first = records[0]
    assert set(first["rates"]) == {"layer_1.E", "layer_1.I", "classifier_1.I"}     # E and I, not the readout
    assert {"I_EE", "I_sub", "I_div", "I_int", "inh_exc_ratio", "ei_correlation"} <= set(first["currents"]["layer_1.E"])
    trainer.circuit.truncate(4)
    assert [r["step"] for r in read_log(run)] == [0, 3]
    code, output = cli("analyze", run, "--samples", 8, "--threads", 1, "-o", tmp_path / "an")
    assert code == 0, output
    result = json.loads((tmp_path / "an" / "analysis.json").read_text())
    assert result["state"] == "trained" and result["source"]["checkpoint"].endswith("last.safetensors")
    assert (tmp_path / "an" / "balance_over_training.png").is_file()
    code, output = cli("analyze", run, "--set", "T=2", "-o", tmp_path / "an2")
    assert code == 2 and "run folder" in output


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["resnet.ei", "vgg.ei"])
def test_large_shipped_specs_through_the_cli(tmp_path, spec):
    code, output = cli("analyze", SPECS / spec, "--data", "uniform", "--samples", 2, "--threads", 1,
                       "--no-plots", "-o", tmp_path)
    assert code == 0, output
    result = json.loads((tmp_path / "analysis.json").read_text())
    assert result["ops"]["total"]["acs"] > 0 and result["spectra"]
