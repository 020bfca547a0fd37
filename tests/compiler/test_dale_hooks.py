"""Plain PyTorch habits on an eidsl network (issue 17, item 7): any torch.optim optimizer keeps
Dale's law, a hand-made negative weight is refused on the next forward, and module forward
hooks on a population see its output."""
import pytest
import torch
import torch.nn.functional as F

import eidsl
from eidsl_compiler.dale import DaleError
from eidsl_compiler.network import HookError
from conftest import SPECS

SMALL = dict(depth=2, input=[1, 8, 8])


def small_net(**params):
    torch.manual_seed(0)
    net = eidsl.build(SPECS / "mlp.ei", **{**SMALL, **params})
    x = torch.rand(32, 1, 8, 8)
    eidsl.ei_init(net, x)
    return net, x


def constrained(net):
    return {n: p for n, p in net.named_parameters() if net.param_specs[n].nonneg}


def adam_steps(net, x, steps=5, lr=1e-2):
    y = torch.arange(x.shape[0]) % 10
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()


def test_adam_keeps_dale_law():
    net, x = small_net()
    before = {n: p.detach().clone() for n, p in constrained(net).items()}
    adam_steps(net, x)
    after = constrained(net)
    assert all(int((p < 0).sum()) == 0 for p in after.values()), \
        {n: int((p < 0).sum()) for n, p in after.items()}
    # Adam did move the weights, and the projection is what held some of them at zero.
    w = after["layer_1.E.W_EE"]
    assert not torch.equal(w, before["layer_1.E.W_EE"])
    assert int((w == 0).sum()) > int((before["layer_1.E.W_EE"] == 0).sum())


def test_unconstrained_populations_stay_free():
    net, x = small_net(dale=False)
    assert not constrained(net)
    adam_steps(net, x)
    assert int((net.layer_1.E.W_EE < 0).sum()) > 0   # dale = false: nothing projected, nothing refused
    net(x)


def test_hand_made_negative_weight_is_refused_on_the_next_forward():
    net, x = small_net()
    with torch.no_grad():
        net.layer_1.E.W_EI[0, 0] = -0.5
    with pytest.raises(DaleError, match=r"layer_1\.E\.W_EI holds 1 negative entries \(min -0\.5\).*net\.clamp_\(\)"):
        net(x)
    net.clamp_()
    assert net(x).shape == (32, 10)


def test_negative_state_dict_is_refused():
    net, x = small_net()
    state = net.state_dict()
    state["classifier_1.I.W_IE"] = -state["classifier_1.I.W_IE"] - 1
    net.load_state_dict(state)
    with pytest.raises(DaleError, match=r"classifier_1\.I\.W_IE holds"):
        net(x)


def test_forward_hook_on_a_population_sees_its_spikes_and_current():
    net, x = small_net()
    reference = net.run(x, keep=True)
    logits = net(x)
    seen = []
    handle = net.layer_1.E.register_forward_hook(lambda m, inputs, out: seen.append((m, inputs, out)))
    hooked_logits = net(x)
    (module, (current,), spikes), = seen
    assert module is net.layer_1.E
    T = net.T
    assert spikes.shape == (T * 32, net.layer_1.E.W_EE.shape[0]) and set(spikes.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(spikes, reference["layer_1.E"])
    assert torch.allclose(current, reference["layer_1.E:I_int"])
    assert torch.allclose(hooked_logits, logits, atol=1e-6)
    handle.remove()
    net(x)
    assert len(seen) == 1


def test_forward_hook_on_interneurons_and_output_replacement():
    net, x = small_net()
    seen = []
    net.layer_1.I.register_forward_hook(lambda m, inputs, out: seen.append(out))
    net(x)
    assert seen[0].shape == (net.T * 32, net.layer_1.I.W_IE.shape[0]) and float(seen[0].detach().min()) >= 0   # s_I = relu(I_IE)
    silent = net.layer_1.E.register_forward_hook(lambda m, inputs, out: torch.zeros_like(out))
    logits = net(x)
    silent.remove()
    # No E spike reaches the readout: its current is exactly its (absent) bias-free input, zero.
    assert torch.count_nonzero(logits) == 0


def test_forward_hook_inside_a_recurrent_loop():
    net = eidsl.build(SPECS / "motifs" / "recurrent_inhibition_loop.ei", input=[1, 8, 8], hidden=[16, 8])
    x = torch.rand(4, 1, 8, 8)
    eidsl.ei_init(net, x)
    reference = net.run(x, keep=True)
    seen = {}
    for pop in ("E", "I"):
        module = getattr(net.recurrent_inhibition_loop_1, pop)
        module.register_forward_hook(lambda m, inputs, out, pop=pop: seen.update({pop: (inputs[0], out)}))
    net(x)
    assert torch.equal(seen["E"][1], reference["recurrent_inhibition_loop_1.E"])
    assert seen["E"][1].shape == (net.T * 4, 16)
    assert torch.allclose(seen["I"][0], reference["recurrent_inhibition_loop_1.I:I_int"])
    net.recurrent_inhibition_loop_2.E.register_forward_hook(lambda m, inputs, out: out * 0)
    with pytest.raises(HookError, match="inside a recurrent loop"):
        net(x)


def test_hooks_that_could_never_fire_are_refused():
    net, x = small_net()
    with pytest.raises(HookError, match=r"'layer_1' is a motif instance.*layer_1\.E, layer_1\.I.*keep=True"):
        net.layer_1.register_forward_hook(lambda *a: None)
    with pytest.raises(HookError, match="pre-hooks"):
        net.layer_1.E.register_forward_pre_hook(lambda *a: None)
