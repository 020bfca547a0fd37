"""Resource limits: the compiler estimates a training step's memory from the IR and refuses, before
allocating anything, a network that would not fit."""
import json
import math
import re
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import eidsl.api as api
from bench.memory import measure
from eidsl import ir
from eidsl.api import build, build_graph, load_graph
from eidsl.cli import app
from eidsl.cli.reliability import parse_memory_limit
from eidsl.errors import EidslError, SpecError
from eidsl.lang.checks import available_memory, estimate_bytes, format_bytes

from conftest import ROOT, SPECS

HUGE = """network huge(T = 4) {
    x = flatten(image([1, 28, 28]))
    exc E = lif(10**12)
    x -> E : dense()
    pop O = current(10)
    E -> O : dense()
    return readout(O)
}
"""


def test_a_trillion_neuron_layer_is_refused_at_once_without_allocating(tmp_path):
    spec = tmp_path / "huge.ei"
    spec.write_text(HUGE)
    code = f"""
import json, time
from bench.memory import peak_rss, reset_peak_rss, rss
from eidsl.api import build            # imports torch: a cost of the process, not of this spec
from eidsl.errors import SpecError
from eidsl.lang.parser import _lark
_lark()                                # so is building the parser
reset_peak_rss()
before, start = rss(), time.perf_counter()
try:
    build({str(spec)!r})
    message = None
except SpecError as exc:
    message = exc.render()
print(json.dumps({{"seconds": time.perf_counter() - start, "peak": peak_rss() - before, "message": message}}))
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads(run.stdout)
    # Generous: this is no timing test (the machine may be busy), only proof that nothing of the
    # requested size is built — allocating it would take minutes or fail, and peak memory stays small.
    assert result["seconds"] < 60.0
    assert result["peak"] < 64 * 2**20           # a single 10^12-float tensor would be 3.6 TiB
    first = result["message"].splitlines()[0]
    assert first.startswith(f"{spec}:1:1: error: network too large: a training step at batch 1 and T = 4 ")
    # 784e12 + 10e13 weights with gradient and momentum; per time step 2 floats per input pixel,
    # 4 per LIF neuron, 3 per readout current, 1 per readout value
    weights = 784 * 10**12 + 10 * 10**12
    assert f"{weights:,} parameters" in first
    assert f"about {format_bytes(12 * weights + 4 * 4 * (2 * 784 + 4 * 10**12 + 3 * 10 + 10))}" in first
    assert "hint: reduce the layer sizes, the batch size or T, or override the limit with --memory-limit" \
        in result["message"]


@pytest.fixture
def no_allocation(monkeypatch):
    """Fails the test if a Network is constructed."""
    made = []
    from eidsl_compiler import network
    monkeypatch.setattr(network, "Network", lambda *a, **k: made.append(a) or pytest.fail("Network was allocated"))
    return made


def test_a_batch_over_the_limit_is_refused_before_the_network_is_allocated(no_allocation):
    small, large = estimate_bytes(load_graph(SPECS / "mlp.ei"), 1), estimate_bytes(load_graph(SPECS / "mlp.ei"), 10_000)
    limit = int(math.sqrt(small["total_bytes"] * large["total_bytes"]))
    with pytest.raises(SpecError) as info:
        build(SPECS / "mlp.ei", batch=10_000, memory_limit=limit)
    message = info.value.message
    assert "at batch 10,000 and T = 4" in message
    assert f"needs about {format_bytes(large['total_bytes'])}" in message
    assert f"more than the {format_bytes(limit)} memory limit" in message
    assert no_allocation == []


def test_the_same_network_builds_at_batch_one_or_with_the_limit_lifted(monkeypatch):
    small = estimate_bytes(load_graph(SPECS / "mlp.ei"), 1)
    limit = 2 * small["total_bytes"]
    assert isinstance(build(SPECS / "mlp.ei", batch=1, memory_limit=limit), torch.nn.Module)
    assert isinstance(build(SPECS / "mlp.ei", batch=10_000, memory_limit=math.inf), torch.nn.Module)


def test_activations_grow_with_batch_and_T_and_parameters_do_not():
    g = load_graph(SPECS / "mlp.ei")
    one, many, long = estimate_bytes(g, 1), estimate_bytes(g, 512), estimate_bytes(g, 1, T=16)
    assert many["activation_bytes"] == 512 * one["activation_bytes"]
    assert long["activation_bytes"] == 4 * one["activation_bytes"]       # the spec's T is 4
    assert many["parameter_bytes"] == one["parameter_bytes"]


@pytest.mark.parametrize("spec", ["mlp.ei", "vgg.ei", "resnet.ei"])
def test_the_estimate_counts_what_the_lowering_allocates(spec):
    g = load_graph(SPECS / spec)
    net = build_graph(g)
    params = sum(p.numel() for p in net.parameters())
    # fused projections (one torch.cat of their weights per step) and gradient-scaled W_EI
    copied = sum(sum(net.tensor(w).numel() for w in s.params.weights)
                 for s in net.plan.steps if s.op == "project" and len(s.params.weights) > 1)
    copied += sum(net.tensor(p).numel() for s in net.plan.steps if s.op == "integrate"
                  for paths in s.params.W_EI for p in paths if net.param_specs[p].grad_scale != 1.0)
    est = estimate_bytes(g)
    assert est["parameters"] == params
    assert est["parameter_bytes"] == 4 * (3 * params + 2 * copied)


def test_the_estimate_is_within_twice_the_measured_peak_of_a_training_step():
    # One E-I MLP step at batch 256 (~80 MB) in a fresh process; bench/memory.py measures more networks.
    result = measure("specs/mlp.ei", 256, family="ei")
    ratio = result["total_bytes"] / result["measured"]
    assert 0.5 < ratio < 2.0, result


def test_available_memory_is_a_plausible_number():
    import os
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < available_memory() <= physical


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_a_bad_batch_is_an_eidsl_error(bad):
    with pytest.raises(EidslError):
        load_graph(SPECS / "mlp.ei", batch=bad)


@pytest.mark.parametrize("text, expected", [
    ("512M", 512 * 2**20), ("8G", 8 * 2**30), ("1.5GiB", 3 * 2**29), ("100", 100), ("2tb", 2 * 2**40),
    ("none", math.inf), (None, None),
])
def test_memory_limit_sizes(text, expected):
    assert parse_memory_limit(text) == expected


@pytest.mark.parametrize("text", ["8Q", "", "-1G", "0", "G"])
def test_bad_memory_limits_are_refused(text):
    with pytest.raises(EidslError):
        parse_memory_limit(text)


def test_memory_command_reports_and_refuses():
    runner = CliRunner()
    ok = runner.invoke(app, ["memory", str(SPECS / "mlp.ei"), "--json"])
    assert ok.exit_code == 0
    report = json.loads(ok.stdout)
    assert report["batch"] == 64                       # the train block's batch_size (E-I family)
    assert report["total_bytes"] == estimate_bytes(load_graph(SPECS / "mlp.ei"), 64)["total_bytes"]
    over = runner.invoke(app, ["memory", str(SPECS / "mlp.ei"), "--batch", "100000", "--memory-limit", "1G"])
    assert over.exit_code == 2
    assert "network too large: a training step at batch 100,000" in over.output
    assert "more than the 1.0 GiB memory limit" in over.output


def test_python_dash_m_runs_the_commands_modules_register():
    # `python -m eidsl.cli` executes cli.py as __main__, a second copy of the module; the commands
    # registered by eidsl/cli_*.py must still be there.
    run = subprocess.run([sys.executable, "-m", "eidsl.cli", "memory", str(SPECS / "mlp.ei"), "--batch", "2",
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["batch"] == 2


def test_sizes_past_float_range_are_still_reported(tmp_path):
    spec = tmp_path / "huger.ei"
    spec.write_text(HUGE.replace("lif(10**12)", "lif(1e300)"))
    with pytest.raises(SpecError) as info:
        load_graph(spec)
    total = estimate_bytes(load_graph(spec, memory_limit=math.inf))["total_bytes"]
    shown = format_bytes(total)
    assert re.fullmatch(r"\d\.\de29\d TiB", shown) and f"needs about {shown}" in info.value.message
    digits = str(total // 2**40)
    assert shown == f"{digits[0]}.{digits[1]}e{len(digits) - 1} TiB"
    assert format_bytes(5 * 2**40) == "5.0 TiB" and format_bytes(3 * 2**20 // 2) == "1.5 MiB"
