"""Every population's rate, and training that watches its own health (issue 17, items 2 and 3).
Runs are one or two epochs of sklearn's digits at 8x8 on small networks."""
import json
import math

import pytest
import torch
from typer.testing import CliRunner

import eidsl
from conftest import SPECS
from eidsl.train import checkpoint as ckpt
from eidsl import ir
from eidsl.train import monitor
from eidsl.train import metrics
from eidsl.api import load_graph
from eidsl.cli import app
from eidsl.train.config import TrainConfig
from eidsl.tools.plot import rate_lines, write_plots
from eidsl.train.trainer import Trainer

CFG = dict(data="digits", epochs=1, batch_size=128, lr=0.01, warmup_epochs=0, shift=0, seed=7, threads=1)
LOOP = SPECS / "motifs" / "recurrent_inhibition_loop.ei"
SPIKING_I = SPECS / "motifs" / "spiking_interneurons.ei"
DIVISIVE = SPECS / "motifs" / "divisive.ei"
GOOD_E = "exc E = lif(n, gain = gain_control, bias = -0.35)"


def train(spec, run, sets, cfg=None, **kwargs):
    lines, warnings = [], []
    graph = load_graph(spec, sets)
    trainer = Trainer(graph, TrainConfig(**{**CFG, **(cfg or {})}), run, spec=str(spec), sets=sets,
                      log=lines.append, warn=warnings.append, **kwargs)
    trainer.start()
    trainer.fit()
    return trainer, metrics.read(run / "metrics.jsonl"), lines, warnings


def bad_divisive(tmp_path):
    """specs/motifs/divisive.ei with the README layer's E (gain 1, bias 0): a saturated layer."""
    text = DIVISIVE.read_text()
    assert GOOD_E in text
    path = tmp_path / "divisive_bad.ei"
    path.write_text(text.replace(GOOD_E, "exc E = lif(n, gain = 1, bias = 0)"))
    return path


# ---------------------------------------------------------------- item 2: every population's rate


def test_populations_inside_a_recurrent_loop_are_monitored(tmp_path):
    trainer, records, lines, _ = train(LOOP, tmp_path / "run", {"input": "[1,8,8]", "hidden": "[16,8]"})
    r = records[-1]
    loop_E = ["recurrent_inhibition_loop_1.E", "recurrent_inhibition_loop_2.E"]
    loop_I = ["recurrent_inhibition_loop_1.I", "recurrent_inhibition_loop_2.I"]
    assert list(r["firing_rates"]) == loop_E and list(r["test_firing_rates"]) == loop_E
    assert all(0.0 < v < 1.0 for v in r["firing_rates"].values())
    assert r["firing_rate"] == pytest.approx(sum(r["firing_rates"].values()) / 2)
    assert list(r["interneuron_rates"]) == [*loop_I, "ei_readout_1.I"]
    assert all(v > 0 for v in r["interneuron_rates"].values())
    # The epoch line shows each of them, grouped.
    e1, e2 = (f"{r['firing_rates'][n]:.3f}" for n in loop_E)
    assert f"rates E {e1}/{e2} s_I " in lines[-1], lines[-1]
    described = json.loads((tmp_path / "run" / "config.json").read_text())["network"]["populations"]
    assert described["recurrent_inhibition_loop_1.E"] == {"sign": "exc", "spiking": True, "loop": True}
    assert described["recurrent_inhibition_loop_1.I"] == {"sign": "inh", "spiking": False, "loop": True}
    # ... and the plot draws them: E solid, I dashed, rate-coded interneurons in their own panel.
    panels = rate_lines(records, described)
    assert [line["label"] for line in panels["firing_rates"]] == [f"E  {n}" for n in loop_E]
    assert [line["inhibitory"] for line in panels["interneuron_rates"]] == [True, True, True]
    assert (tmp_path / "run" / "plots" / "firing_rates.png") in write_plots(tmp_path / "run")


def test_measure_rates_reports_spiking_interneurons_apart_from_E():
    net = eidsl.build(SPIKING_I, input=[1, 8, 8], widths=[32, 16])
    x = torch.rand(16, 1, 8, 8)
    eidsl.ei_init(net, x)
    measured = monitor.measure_rates(net, x)
    env = net.run(x, keep=True)
    pops = {p.name: p for p in monitor.populations(net)}
    assert set(measured) == {"spiking_ei_layer_1.I", "spiking_ei_layer_1.E", "spiking_ei_layer_2.I",
                             "spiking_ei_layer_2.E", "classifier_1.I"}
    for name, value in measured.items():
        assert value == pytest.approx(float(env[name].detach().float().mean()))
    assert (pops["spiking_ei_layer_1.I"].group, pops["spiking_ei_layer_1.E"].group) == ("I", "E")
    line = monitor.summary(measured, list(pops.values()))
    e = "/".join(f"{measured[f'spiking_ei_layer_{k}.E']:.3f}" for k in (1, 2))
    i = "/".join(f"{measured[f'spiking_ei_layer_{k}.I']:.3f}" for k in (1, 2))
    assert line == f"rates E {e} I {i} s_I {measured['classifier_1.I']:.2f}"


# ---------------------------------------------------------------- item 3: health


def test_saturated_divisive_layer_warns_once_with_the_fix(tmp_path):
    _, records, lines, warnings = train(bad_divisive(tmp_path), tmp_path / "run",
                                        {"input": "[1,8,8]", "widths": "[32]"}, {"epochs": 2})
    assert [r["firing_rates"]["divisive_layer_1.E"] for r in records] == [1.0, 1.0]
    assert len(warnings) == 1, warnings           # printed once, although both epochs are saturated
    w = warnings[0]
    assert w.startswith("warning: excitatory layer 'divisive_layer_1.E' was saturated for all of epoch 1")
    assert "inhibited only divisively" in w and "`lif(n, gain = gain_control, bias = -0.35)`" in w
    assert "specs/motifs/divisive.ei" in w
    for r in records:    # recorded in every epoch it holds
        assert [(x["kind"], x["layer"]) for x in r["warnings"]] == [("saturated", "divisive_layer_1.E")]
    assert "[1 warning]" in lines[0]


def test_a_healthy_run_has_no_warnings(tmp_path):
    _, records, _, warnings = train(DIVISIVE, tmp_path / "run", {"input": "[1,8,8]", "widths": "[32]"})
    assert warnings == [] and "warnings" not in records[-1]
    assert 0.005 < records[-1]["firing_rates"]["divisive_layer_1.E"] < 0.95


def test_strict_stops_cleanly_and_the_run_resumes(tmp_path):
    spec, run = bad_divisive(tmp_path), tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(spec), "--set", "input=[1,8,8]", "--set", "widths=[32]",
                                 "--data", "digits", "--epochs", "2", "--threads", "1", "--strict",
                                 "--out", str(run)])
    assert result.exit_code == 5, result.output
    assert "error: training stopped by --strict after epoch 1: excitatory layer 'divisive_layer_1.E'" \
        in result.output
    assert f"eidsl train --resume {run} --no-strict" in result.output
    assert "Traceback" not in result.output
    saved = ckpt.load(run / "checkpoints" / "last.safetensors")
    assert saved.meta["epoch"] == 1 and saved.state["epoch"] == 1
    assert len(metrics.read(run / "metrics.jsonl")) == 1
    result = runner.invoke(app, ["train", "--resume", str(run), "--no-strict", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in metrics.read(run / "metrics.jsonl")] == [1, 2]


def _at_last_batch(action):
    def callback(trainer):
        if trainer.batch == trainer.iters_per_epoch:
            action(trainer.net)
    return callback


def test_dale_violation_that_bypassed_every_guard_is_a_warning(tmp_path):
    def negative(net):
        net.layer_1.E.W_EE.data[0, :3] = -1.0    # .data: no version bump, the forward's check cannot see it
    _, records, _, warnings = train(SPECS / "mlp.ei", tmp_path / "run", {"depth": "2", "input": "[1,8,8]"},
                                    on_batch_end=_at_last_batch(negative))
    assert [(w["kind"], w["layer"]) for w in records[-1]["warnings"]] == [("dale", "layer_1.E.W_EE")]
    assert len(warnings) == 1 and "layer_1.E.W_EE holds 3 negative entries" in warnings[0]
    assert "net.clamp_()" in warnings[0]


def test_nonfinite_current_with_a_finite_loss_is_a_warning(tmp_path):
    def overflow(net):
        with torch.no_grad():
            net.layer_1.I.g_I.fill_(math.inf)
    _, records, _, warnings = train(SPECS / "mlp.ei", tmp_path / "run", {"depth": "2", "input": "[1,8,8]"},
                                    on_batch_end=_at_last_batch(overflow))
    kinds = [(w["kind"], w["layer"]) for w in records[-1]["warnings"]]
    assert ("nonfinite", "layer_1.E") in kinds, kinds
    message = next(w for w in warnings if "non-finite" in w)
    assert "I_div of layer 'layer_1.E'" in message and "stabilize" in message


@pytest.mark.parametrize("spec", sorted(p.relative_to(SPECS).as_posix() for p in SPECS.rglob("*.ei")))
def test_every_population_of_the_ir_is_measured(spec):
    """E and I, in motifs, residual blocks and loops: the measured set is the IR's (readouts excepted)."""
    graph = load_graph(SPECS / spec)
    net = eidsl.build_graph(graph)
    expected = {name for name, rec in graph.nodes()
                if isinstance(rec, ir.Population) and rec.model in ("lif", "relu")}
    assert {p.name for p in monitor.populations(net)} == expected
    signs = {p.name: p.sign for p in monitor.populations(net)}
    assert all(signs[n] == graph.node(n).sign for n in expected)
