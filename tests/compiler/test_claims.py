"""The paper's qualitative claims on tiny budgets (issue 6 quick mode); full runs: bench/experiments.py.

Only claims that hold robustly at this size are asserted.
"""
import pytest
import torch

import eidsl
from eidsl.api import load_graph
from eidsl.train.config import TrainConfig
from eidsl.data.datasets import load
from eidsl.train.trainer import Trainer

from conftest import SPECS


def rates_at_init(family: str, depth: int = 16) -> list[float]:
    train, _, _ = load("mnist5k", augment=False)
    x = torch.stack([train[i][0] for i in range(0, len(train), 32)])
    torch.manual_seed(0)
    net = eidsl.build(SPECS / "mlp.ei", depth=depth, family=family, paper=True)
    if family == "ei":
        eidsl.ei_init(net, x)
    with torch.no_grad():
        env = net.run(x, keep=True)
    return [float(env[s.outs[0]].mean()) for s in net.plan.steps if s.op == "lif"]


def test_ei_init_keeps_a_deep_stack_firing_where_default_init_goes_silent():
    ei, plain = rates_at_init("ei"), rates_at_init("plain")
    assert len(ei) == 15
    assert all(0.05 < r < 0.5 for r in ei)          # every layer active (docs/science.md §7: 0.11-0.18)
    assert plain[0] < 0.02 and max(plain[1:]) < 0.001   # silent from layer 2 on


def short_run(tmp_path, family: str, lr: float) -> float:
    sets = {"depth": "8", "input": "[1,8,8]", "family": f'"{family}"', "paper": "true"}
    graph = load_graph(SPECS / "mlp.ei", sets)
    cfg = TrainConfig(data="digits", epochs=2, batch_size=64, lr=lr, warmup_epochs=0, seed=0, threads=1,
                      hist_epochs=[])
    trainer = Trainer(graph, cfg, tmp_path / family, log=lambda line: None)
    trainer.start()
    return trainer.fit()["best_accuracy"]


def test_plain_deep_snn_stays_at_chance_while_ei_learns(tmp_path):
    ei = short_run(tmp_path, "ei", 0.01)
    plain = short_run(tmp_path, "plain", 0.1)
    assert plain < 0.2                                 # 10 classes: chance
    assert ei > 0.5


def test_each_ablation_changes_the_first_step_as_the_paper_says(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("experiments", SPECS.parent / "bench" / "experiments.py")
    experiments = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiments)
    rows = {r["variant"]: r for r in experiments.ablation_gradients(tmp_path, depths=(8,))}
    full = rows["full"]
    assert full["finite"] and 0.05 < full["rate"] < 0.5 and full["grad_first"] > 0
    # Without E-I Init the stack is silent: no spikes, no gradient anywhere (firing-rate collapse).
    assert rows["no_ei_init"]["rate"] == 0 and rows["no_ei_init"]["grad_first"] == 0
    # E-I Prop's 1/d: without it W_EI's gradient is d = 784 (layer 1's fan-in) times larger.
    assert abs(rows["no_grad_scale"]["grad_W_EI_first"] / full["grad_W_EI_first"] / 784 - 1) < 1e-4
    # The other parts change nothing before the first update on this data (no exact zero divisor)
    # beyond float rounding: the epsilon-division variant runs the circuit as separate ops and adds
    # its epsilon to the divisor, so its gradients differ from the full circuit's in the last bits
    # (3e-8 at most in layer 1's W_EE; its norm used to round to the same float32 by chance).
    for variant in ("no_ste", "no_dale", "epsilon_division"):
        assert rows[variant]["grad_first"] == pytest.approx(full["grad_first"], rel=1e-6), variant
    assert (tmp_path / "ablation" / "gradients.md").read_text().count("\n") == 2 + len(rows)
