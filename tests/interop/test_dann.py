"""DANN (Cornford et al. 2021) from specs alone: parity with the reference's fixtures
(../shared/reference-fixtures-dann, too large to ship: 9 MB), the declared init rules, and the
language words the specs use."""
import math

import pytest
import torch
import torch.nn.functional as F

import eidsl
from eidsl.api import unwrap
from eidsl.errors import SpecError

from conftest import SHARED, SPECS

DANN_FIXTURES = SHARED / "reference-fixtures-dann"
MLP = [("DANN_MLP_EiDenseWithShunt_b32_s1.pt", "shunt"), ("DANN_MLP_EiDense_b32_s1.pt", "dense")]
CASES = MLP + [("DANN_CNN_EiConv_b8_s1.pt", "conv")]


def dann_fixture(name):
    path = DANN_FIXTURES / name
    if not path.exists():
        pytest.skip(f"DANN reference fixture {path} not present (it lives in the project's shared folder)")
    return torch.load(path, weights_only=True)


def build(kind, **params):
    if kind == "conv":
        return eidsl.build(SPECS / "dann_conv.ei", **params)
    # The fixtures scale the MNIST config's 500 E / 50 I per hidden layer down to 100 / 10.
    return eidsl.build(SPECS / "dann.ei", layer=kind, n_e=100, n_i=10, **params)


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def loaded(name, kind, csgd):
    ref = dann_fixture(name)
    net = build(kind, csgd=csgd)
    mapping = eidsl.import_dann(net, ref["state_dict"])
    return ref, net, mapping


def backward(ref, net):
    loss = F.cross_entropy(net(ref["input"]), ref["labels"])
    loss.backward()
    return loss


@pytest.mark.parametrize("name, kind", CASES)
def test_import_maps_every_reference_tensor(name, kind):
    ref, net, mapping = loaded(name, kind, True)
    assert set(mapping) == set(ref["state_dict"])
    assert sorted(mapping.values()) == sorted(n for n, _ in net.named_parameters())
    for key, path in mapping.items():
        assert torch.equal(unwrap(net).tensor(path).detach().flatten(), ref["state_dict"][key].flatten())


@pytest.mark.parametrize("name, kind", CASES)
def test_logits_and_activations_match_reference(name, kind):
    ref, net, mapping = loaded(name, kind, True)
    with torch.no_grad():
        env = unwrap(net).run(ref["input"], keep=True)
    assert rel_err(env[unwrap(net).plan.output], ref["logits"]) <= 1e-5
    layers = {key.rsplit(".", 1)[0].split(".", 1)[1]: path.rsplit(".", 2)[0] for key, path in mapping.items()}
    checked = 0
    for key, want in ref["intermediates"].items():
        layer, what = key.rsplit(".", 1)
        scope = layers[layer]
        E, I = f"{scope}.E", f"{scope}.I"
        src = next(k.split("<-", 1)[1] for k in env if k.startswith(E + "<-"))
        ours = {"ze": f"{E}<-{src}", "e_act_map": f"{E}<-{src}", "zi": I, "i_act_map": I,
                "z": f"{E}:I_int", "h": E}.get(what)
        if ours is None:   # z_hat, gamma, subtractive maps live inside the fused circuit step
            continue
        assert rel_err(env[ours], want) <= 1e-5, key
        checked += 1
    assert checked >= 2 * (len(layers))


@pytest.mark.parametrize("csgd", [True, False])
@pytest.mark.parametrize("name, kind", CASES)
def test_gradients_and_step_match_reference(name, kind, csgd):
    ref, net, mapping = loaded(name, kind, csgd)
    loss = backward(ref, net)
    assert float(loss) == pytest.approx(float(ref["loss"]), rel=1e-6)
    grads = ref["grads_csgd" if csgd else "grads"]
    for key, path in mapping.items():
        got, want = unwrap(net).tensor(path).grad.flatten(), grads[key].flatten()
        assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max()) + 1e-5, key
    opt = eidsl.optimizer(net, lr=ref["lr"] if csgd else ref["lr_no_correction"], momentum=0, weight_decay=0)
    opt.step()
    after = ref["params_after_step" if csgd else "params_after_step_no_correction"]
    for key, path in mapping.items():
        assert rel_err(unwrap(net).tensor(path).detach().flatten(), after[key].flatten()) <= 1e-5, key


@pytest.mark.parametrize("name, kind", CASES)
def test_large_step_clamps_like_reference(name, kind):
    ref, net, mapping = loaded(name, kind, False)
    backward(ref, net)
    lr = ref["lr_stress"]
    pushed = {key: int(((unwrap(net).tensor(p) - lr * unwrap(net).tensor(p).grad) < 0).sum())
              for key, p in mapping.items()}
    eidsl.optimizer(net, lr=lr, momentum=0, weight_decay=0).step()
    for key, path in mapping.items():
        assert rel_err(unwrap(net).tensor(path).detach().flatten(),
                       ref["params_after_step_stress"][key].flatten()) <= 1e-4, key
    hits = ref["clamp_hits"]["stress"] if "stress" in ref["clamp_hits"] else None
    if hits is not None:
        for key, n in hits.items():
            assert abs(pushed[key] - n) <= max(2, n // 1000), key


def test_csgd_factors_are_the_declared_rules():
    """csgd = true scales exactly the I-side gradients: W_IE by 1/sqrt(n_E), W_EI by 1/d,
    log g_I by 1/(sqrt(n_E) d); everything else is the raw gradient."""
    torch.manual_seed(0)
    x, y = torch.rand(16, 784), torch.randint(0, 10, (16,))
    raw, fixed = build("shunt", csgd=False), build("shunt", csgd=True)
    fixed.load_state_dict(raw.state_dict())
    for net in (raw, fixed):
        F.cross_entropy(net(x), y).backward()
    for (name, p), (_, q) in zip(raw.named_parameters(), fixed.named_parameters()):
        spec = raw.param_specs[name]
        n_e = 10 if name.startswith("dann_layer_4") else 100
        d = spec.fan_in
        factor = {"W_IE": 1 / math.sqrt(n_e), "W_EI": 1 / d, "g_I": 1 / (math.sqrt(n_e) * d)}.get(spec.role, 1.0)
        assert torch.allclose(q.grad, p.grad * factor, rtol=1e-5, atol=1e-12), name


def test_init_follows_the_closed_forms():
    net = eidsl.build(SPECS / "dann.ei")          # the MNIST config: 784 -> 3 x (500, 50) -> (10, 1)
    t = {n: p.detach().double() for n, p in net.named_parameters()}
    for i, n_in in ((1, 784), (2, 500), (3, 500), (4, 500)):
        beta = math.sqrt(1 / (2 * n_in)) if i == 1 else math.sqrt(2 * math.pi / (n_in * (2 * math.pi - 1)))
        w = t[f"dann_layer_{i}.E.W_EE"]
        # Exponential(beta): mean = std = beta, no negative value; 5 standard errors of the moments
        tol = 5 * beta / math.sqrt(w.numel())
        assert abs(w.mean() - beta) < tol and abs(w.std() - beta) < 3 * tol and w.min() >= 0
        assert float((w <= beta * math.log(2)).double().mean()) == pytest.approx(0.5, abs=5 / math.sqrt(w.numel()))
        n_i = 50 if i < 4 else 1
        assert torch.all(t[f"dann_layer_{i}.E.W_EI"] == torch.tensor(1 / n_i, dtype=torch.float32).double())
        assert torch.allclose(t[f"dann_layer_{i}.I.log_g_I"],
                              torch.full((n_i,), math.log(math.sqrt((2 * math.pi - 1) / n_in)), dtype=torch.double))
        assert torch.all(t[f"dann_layer_{i}.E.b_E"] == 0) and torch.all(t[f"dann_layer_{i}.E.g_E"] == 1)
        if n_i == 1:   # the single I unit starts as the average E unit
            assert torch.allclose(t[f"dann_layer_{i}.I.W_IE"], w.mean(0, keepdim=True), rtol=1e-6)
        else:
            v = t[f"dann_layer_{i}.I.W_IE"]
            assert abs(v.mean() - beta) < 5 * beta / math.sqrt(v.numel())


def test_init_moments_match_reference_init():
    """eidsl's own init (seeded differently) against the reference's draws: same distributions."""
    ref = dann_fixture("DANN_MLP_EiDenseWithShunt_b32_s1.pt")
    net = build("shunt")
    mapping = eidsl.import_dann(build("shunt"), ref["state_dict"])   # only for the key mapping
    for key, path in mapping.items():
        a, b = unwrap(net).tensor(path).detach().double().flatten(), ref["state_dict"][key].double().flatten()
        tol = 6 * float(b.std(correction=0)) / math.sqrt(b.numel()) + 1e-7
        assert abs(float(a.mean() - b.mean())) <= tol, key
        if b.numel() > 1000:
            assert float(a.std()) == pytest.approx(float(b.std()), rel=0.1), key


def test_flat_input_takes_images():
    net = build("dense")
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(net(x), net(x.flatten(1)))


def test_exponentiated_gradient_keeps_signs_and_is_multiplicative():
    torch.manual_seed(1)
    net = build("shunt")
    F.cross_entropy(net(torch.rand(8, 784)), torch.randint(0, 10, (8,))).backward()
    with torch.no_grad():
        unwrap(net).tensor("dann_layer_1.E.W_EE")[0, :5] = 0.0
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    eidsl.optimizer(net, lr=5.0, momentum=0, weight_decay=0, rule="eg").step()
    for n, p in net.named_parameters():
        if net.param_specs[n].nonneg:
            assert torch.allclose(p, before[n] * torch.exp(-5.0 * grads[n]), rtol=1e-5, atol=0), n
            assert torch.all(p >= 0)
        else:
            assert torch.allclose(p, before[n] - 5.0 * grads[n], rtol=1e-5, atol=1e-7), n
    assert torch.all(unwrap(net).tensor("dann_layer_1.E.W_EE")[0, :5] == 0)


def test_optimizer_rule_is_a_training_setting():
    from eidsl.train.config import TrainConfig
    assert TrainConfig(optimizer="eg").optimizer == "eg"
    with pytest.raises(Exception):
        TrainConfig(optimizer="adam")


# ---------------------------------------------------------------- the language words


def write(tmp_path, body, params=""):
    path = tmp_path / "net.ei"
    path.write_text(f"network net(T = 1, input = [4]{params}) {{\n    x = image(input)\n{body}\n}}\n")
    return path


def test_formula_naming_an_undefined_size_is_a_located_error(tmp_path):
    spec = write(tmp_path, "    exc E = linear(3)\n    x -> E : dense(init = exponential(1 / n_I))\n"
                           "    return readout(E)")
    with pytest.raises(SpecError) as err:
        eidsl.build(spec)
    assert "n_I" in str(err.value) and err.value.span is not None and err.value.span.line == 4


def test_formula_values_resolve_per_parameter(tmp_path):
    spec = write(tmp_path, "    exc E = linear(3, bias = param(sqrt(fan_in) + n_E, grad = 1 / fan_in))\n"
                           "    x -> E : dense(init = exponential(2 * fan_in))\n    return readout(E)")
    net = eidsl.build(spec)
    assert torch.all(net.tensor("E.b_E") == 2.0 + 3)
    assert net.param_specs["E.b_E"].grad_scale == 0.25
    assert net.param_specs["E.W_EE"].init.scale == 8.0


def test_param_refuses_unknown_transform(tmp_path):
    spec = write(tmp_path, "    exc E = linear(3, gain = param(1, transform = square))\n"
                           "    x -> E : dense()\n    return readout(E)")
    with pytest.raises(SpecError, match="square"):
        eidsl.build(spec)


def test_transform_exp_stores_the_log(tmp_path):
    spec = write(tmp_path, "    exc E = linear(2, bias = 0)\n    inh I = linear(1, gain = param(log(2), transform = exp, "
                           "clamp = none))\n    x -> E : dense(init = 1)\n    x -> I : dense(init = 1)\n"
                           "    I -| E : inhibit(div = true, sub = false, init = 1, stabilize = epsilon)\n"
                           "    return readout(E)")
    net = eidsl.build(spec)
    assert not net.param_specs["I.log_g_I"].nonneg
    x = torch.ones(1, 4)
    # E = I_EE / (W_EI g_I s_I + eps) = 4 / (2 * 4 + 1e-8)
    assert float(net(x)[0, 0]) == pytest.approx(0.5, rel=1e-6)


def test_deepeisnn_gradient_rule_is_a_formula_instance():
    text = (SPECS.parent / "eidsl" / "lang" / "stdlib" / "std.ei").read_text()
    assert "grad_scale = {true: 1 / fan_in, false: 1}[grad_scale]" in text
    net = eidsl.build(SPECS / "mlp.ei")
    w_ei = [s for s in net.param_specs.values() if s.role == "W_EI"]
    assert w_ei and all(s.grad_scale == pytest.approx(1 / s.fan_in) for s in w_ei)


def test_dann_specs_describe_and_check():
    for spec, params in (("dann.ei", {"layer": "dense"}), ("dann.ei", {"layer": "shunt"}), ("dann_conv.ei", {})):
        graph = eidsl.load_graph(SPECS / spec, **params)
        assert graph.node(graph.output).shape == (10,)
    with pytest.raises(SpecError, match="layer"):
        eidsl.load_graph(SPECS / "dann.ei", layer="divisive")


def test_transformed_parameter_refuses_data_dependent_init(tmp_path):
    spec = write(tmp_path, "    exc E = linear(2, gain = param(gain_control, transform = exp))\n"
                           "    x -> E : dense()\n    return readout(E)")
    with pytest.raises(SpecError, match="gain_control"):
        eidsl.build(spec)


def test_mean_of_needs_a_weight_from_the_same_source(tmp_path):
    spec = write(tmp_path, "    exc E = relu(3)\n    exc F = linear(3)\n    x -> E : dense()\n"
                           "    E -> F : dense(init = mean_of(E))\n    return readout(F)")
    with pytest.raises(SpecError, match="mean_of"):
        eidsl.build(spec)


def test_constant_schedule_keeps_the_rate():
    from eidsl.train.config import TrainConfig
    from eidsl.train.trainer import make_scheduler
    net = build("dense")
    opt = eidsl.optimizer(net, lr=0.1, momentum=0, weight_decay=0)
    sched = make_scheduler(opt, TrainConfig(lr=0.1, epochs=2, schedule="constant"), 5)
    rates = []
    for _ in range(10):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates == [0.1] * 10


def test_cli_describe_and_nir_report_for_dann(tmp_path):
    from typer.testing import CliRunner
    from eidsl.cli import app
    runner = CliRunner()
    out = runner.invoke(app, ["describe", str(SPECS / "dann.ei"), "--set", "n_e=100", "--set", "n_i=10"])
    assert out.exit_code == 0 and "113,001" in out.output
    out = runner.invoke(app, ["export", "nir", str(SPECS / "dann_conv.ei"), "--output", str(tmp_path / "a.nir")])
    assert out.exit_code == 2 and "max pooling 'pool_1'" in out.output and not (tmp_path / "a.nir").exists()
    out = runner.invoke(app, ["export", "nir", str(SPECS / "dann_conv.ei"), "--lossy", "--verbose", "--samples", "8",
                              "--output", str(tmp_path / "b.nir")])
    assert out.exit_code == 0, out.output
    assert "written as an average pool" in out.output and "stored as its log" in out.output


def test_training_accepts_image_data_for_the_flat_input():
    from eidsl.data.datasets import DatasetInfo
    from eidsl.train.evaluate import check_data_fits
    graph = eidsl.load_graph(SPECS / "dann.ei", n_e=20, n_i=2)
    check_data_fits(graph, DatasetInfo("mnist5k", (1, 28, 28), 10, False, 4000, 1000))
    with pytest.raises(Exception, match="784"):
        check_data_fits(graph, DatasetInfo("cifar10", (3, 32, 32), 10, False, 1, 1))


def test_pytorch_default_init_is_a_formula_instance(tmp_path):
    """`default` is U(-1/sqrt(d), 1/sqrt(d)); written as a formula it draws the same numbers."""
    nets = []
    for rule in ("default", "uniform(-1 / sqrt(fan_in), 1 / sqrt(fan_in))"):
        spec = write(tmp_path, f"    exc E = linear(5)\n    x -> E : dense(init = {rule})\n    return readout(E)")
        nets.append(eidsl.build(spec, seed=3))
    assert torch.equal(nets[0].tensor("E.W_EE"), nets[1].tensor("E.W_EE"))
    spec = write(tmp_path, "    exc E = linear(5)\n    x -> E : dense(init = normal(0, 1 - fan_in))\n"
                           "    return readout(E)")
    with pytest.raises(SpecError, match="positive standard deviation"):
        eidsl.build(spec)


def test_probe_reports_dann_layers_with_the_gain_the_circuit_uses():
    # Histograms (eidsl.train.probe) show each E layer once, its interneurons inside it, and g_I as
    # exp of the stored log: DANN's hidden E units are ReLU and its I units linear.
    from eidsl.train.probe import layer_quantities
    net = eidsl.build(SPECS / "dann.ei", n_e=20, n_i=4, hidden=1)
    with torch.no_grad():
        net.tensor("dann_layer_1.I.log_g_I").copy_(torch.tensor([-1.0, 0.0, 0.5, 1.0]))
    x = torch.rand(3, 784)
    q = layer_quantities(net, x)
    assert sorted(q) == ["dann_layer_1.E", "dann_layer_2.E"]
    layer = q["dann_layer_1.E"]
    assert torch.equal(layer["g_I"], torch.exp(torch.tensor([-1.0, 0.0, 0.5, 1.0])))
    # I_div = W_EI (g_I * z_I), with z_I the I units' linear activity
    z_I = x @ net.tensor("dann_layer_1.I.W_IE").T
    want = (z_I * layer["g_I"]) @ net.tensor("dann_layer_1.E.W_EI").T
    assert torch.allclose(layer["I_div"], want, rtol=1e-5, atol=1e-6)
