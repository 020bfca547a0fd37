"""The benchmark's own pieces: the conv-only floor, interleaved timing, the command line."""
import sys

import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import eidsl
from bench.floor import Floor
from bench.timing import interleaved, paired_ratio
from eidsl_compiler import ops
from conftest import SPECS
from eidsl.cli import app


def test_floor_has_the_e_i_networks_fused_projections_and_trains():
    net = eidsl.build(SPECS / "mlp.ei", depth=2, T=2, paper=True)
    floor = Floor(net)
    projects = [s for s in net.plan.steps if s.op == "project"]
    assert len(floor.fused) == len(projects) == 2
    assert [tuple(w.shape) for w in floor.fused] == [(500 + 125, 784), (10 + 2, 500)]
    x = torch.rand(3, 1, 28, 28)
    logits = floor(x)
    assert logits.shape == (3, 10)
    F.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in floor.fused)


def test_step_flops_count_every_product_of_the_circuit():
    from bench.cases import Case, Setup, batch_for, build, train_step
    from bench.run import step_gflop
    case = Case("mlp2", "E-I MLP-2", "mlp.ei", {"depth": 2, "paper": True}, 4, (1, 8, 8))
    setup = Setup(T=2)
    x, y = batch_for(case, setup)
    rows = 2 * 4                                          # T * batch
    gflop = {k: step_gflop(train_step(*build(case, k, setup, x), x, y, setup)) for k in ("ei", "bn", "floor")}
    # E-I, per row: layer 1's fused E->E|E->I product (500 + 125 outputs of 64 inputs) forward and for
    # its weight gradient; seven 500 x 125 W_EI products (I_sub and I_div forward, I_div again in the
    # backward, two input and two weight gradients); the classifier's 10 + 2 outputs of 500 forward and
    # both gradients, and its subtractive-only 10 x 2 W_EI forward and both gradients.
    # The first layer reads the static image: E-I and BN-SNN run it once per sample (batch 4 rows,
    # static-input hoisting), the floor T times.
    first_ei, first_bn = 2 * 625 * 64, 2 * 500 * 64
    ei = 7 * 500 * 125 + 3 * 12 * 500 + 3 * 10 * 2
    bn = 3 * 10 * 500
    floor = 2 * 625 * 64 + 3 * 12 * 500
    assert gflop == {"ei": 2 * (ei * rows + first_ei * 4) / 1e9, "bn": 2 * (bn * rows + first_bn * 4) / 1e9,
                     "floor": 2 * floor * rows / 1e9}


def test_interleaved_rotates_the_order_and_ratios_pair_repetitions():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1,
                        burst=2)
    # warm-up, then per repetition each model runs one settling step and a timed burst of two, in turn
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3 + ["a"] * 3 + ["b"] * 3
    assert [len(v) for v in times.values()] == [3, 3]
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == 2.0


def test_targets_show_the_spread_of_each_time_ratio_over_repetitions():
    from bench.report import targets
    case = {"ratio": {"ei/bn": 1.3, "ei/floor": 1.5, "mem ei/bn": 1.1},
            "samples_ms": {"ei": [300.0, 330.0, 360.0], "bn": [250.0, 220.0, 240.0], "floor": [200.0, 220.0, 240.0]}}
    rows = {r["target"]: r for r in targets({"cases": {"vgg8": case}})}
    assert rows["E-I VGG-8 step <= 1.35x BN-SNN"]["range"] == (1.2, 1.5)
    assert rows["E-I VGG-8 step <= 1.35x BN-SNN"]["met"] and not rows["E-I VGG-8 step <= 1.3x conv floor"]["met"]
    assert rows["E-I VGG-8 step <= 1.3x conv floor"]["range"] == (1.5, 1.5)
    assert rows["E-I VGG-8 peak memory <= 1.2x BN-SNN"]["range"] is None      # measured once, not timed


def test_fused_ops_under_bf16_autocast_match_the_plain_forward():
    net = eidsl.build(SPECS / "mlp.ei", depth=2, T=2, paper=True)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    eidsl.ei_init(net, x)
    outs = []
    for enabled in (True, False):
        with ops.use_fused(enabled), torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(net(x))
    assert outs[0].dtype == torch.bfloat16 and torch.equal(outs[0], outs[1])
    net.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(net(x).float(), torch.tensor([3, 4]))
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_bench_command_refuses_an_unknown_precision():
    result = CliRunner().invoke(app, ["bench", "--amp", "fp8"])
    assert result.exit_code == 2
    assert "--amp takes bf16" in result.output


def test_bench_outside_a_checkout_is_a_clean_error(monkeypatch):
    # An installed eidsl has no bench/ package: None in sys.modules makes its import fail as it would there.
    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "bench", None)
    result = CliRunner().invoke(app, ["bench", "--quick"])
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output
    assert "needs the bench/ folder" in result.output and "hint: run it from a checkout" in result.output
