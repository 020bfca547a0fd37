"""Cycles through a delayed edge run one time step at a time, against hand-written per-step loops."""
import pytest
import torch
import torch.nn.functional as F

import eidsl
from eidsl_compiler.network import Network

import paper_math as pm
from conftest import SPECS

MOTIFS = SPECS / "motifs"

RECURRENT_INHIBITION = """
import "recurrent_inhibition_loop"
network rec(T = 5) {
    h = flatten(image([1, 6, 6]))
    h = recurrent_inhibition_loop(h, 12)
    return readout(ei_readout(h, 8))
}
"""

SELF_EXCITATION = """
import "std"
network selfloop(T = 4) {
    x = flatten(image([1, 6, 6]))
    pop E = lif(10)
    x -> E : dense(init = abs_default)
    E -> E : dense(init = abs_default, delay = 1)
    return readout(plain_readout(E, 3))
}
"""


def build(tmp_path, text):
    spec = tmp_path / "net.ei"
    spec.write_text(text)
    return eidsl.build(spec, include=[MOTIFS]).double()


def compare(net, P, logits, labels, x):
    F.cross_entropy(net(x), labels).backward()
    F.cross_entropy(logits, labels).backward()
    torch.testing.assert_close(net(x), logits.detach(), rtol=1e-12, atol=1e-12)
    used = 0
    for name, p in net.named_parameters():
        if p.grad is None:
            assert P[name].grad is None, name
            continue
        torch.testing.assert_close(p.grad, P[name].grad, rtol=1e-9, atol=1e-12, msg=name)
        used += bool(p.grad.abs().sum() > 0)
    return used


def test_recurrent_inhibition_from_the_previous_step(tmp_path):
    T, B = 5, 6
    net = build(tmp_path, RECURRENT_INHIBITION)
    assert [s.op for s in net.plan.steps].count("loop") == 1
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(B, 1, 6, 6, generator=gen, dtype=torch.float64)
    scales = eidsl.ei_init(net, x)
    # E -> I sits inside the loop; E-I Init measured its input (the loop's own E spikes).
    assert scales["recurrent_inhibition_loop_1.I.W_IE"] > 0
    with torch.no_grad():
        net.get_parameter("recurrent_inhibition_loop_1.E.g_E").uniform_(0.5, 1.5, generator=gen)
        net.get_parameter("recurrent_inhibition_loop_1.E.b_E").normal_(0, 0.1, generator=gen)
    labels = torch.randint(0, 8, (B,), generator=gen)

    name = "recurrent_inhibition_loop_1"
    P = pm.leaves(net, {f"{name}.E.W_EI": 12, "ei_readout_1.O.W_EI": 12})
    I_EE = (x.flatten(1) @ P[f"{name}.E.W_EE"].t())
    v, s_E, spikes, inhibited = torch.zeros(B, 12, dtype=x.dtype), None, [], []
    for t in range(T):
        # I is driven by E's spikes of the step before (none before the first step).
        I_IE = s_E @ P[f"{name}.I.W_IE"].t() if t > 0 else torch.zeros(B, 3, dtype=x.dtype)
        s_I = torch.relu(I_IE)
        I_int = P[f"{name}.E.g_E"] * (I_EE - s_I @ P[f"{name}.E.W_EI"].t()) + P[f"{name}.E.b_E"]
        v, s_E = pm.lif_step(v, I_int)
        spikes.append(s_E)
        inhibited.append(s_I)
    O = {"W_EE": P["ei_readout_1.O.W_EE"], "W_IE": P["ei_readout_1.I.W_IE"]}
    logits = pm.readout(pm.ei_output(torch.cat(spikes), O, P["ei_readout_1.O.W_EI"]), T)

    assert compare(net, P, logits, labels, x) == 5 + 3     # W_EE, W_IE, W_EI, g_E, b_E; readout's three
    assert torch.cat(inhibited[1:]).sum() > 0             # the loop is live: I fires from step 2 on
    rates = torch.stack([s.detach().mean() for s in spikes])
    assert rates[0] > 0 and rates.max() > rates.min()     # inhibition of step t-1 shapes step t


def test_self_excitation_through_a_delay(tmp_path):
    T, B = 4, 5
    net = build(tmp_path, SELF_EXCITATION)
    loop = next(s for s in net.plan.steps if s.op == "loop")
    assert loop.outs == ("E",)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(B, 1, 6, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (B,), generator=gen)
    with torch.no_grad():
        net.get_parameter("E.W").mul_(3)
    P = pm.leaves(net, {})
    drive = x.flatten(1) @ P["E.W"].t()
    v, s, spikes = torch.zeros(B, 10, dtype=x.dtype), torch.zeros(B, 10, dtype=x.dtype), []
    for t in range(T):
        v, s = pm.lif_step(v, drive + s @ P["E.W_2"].t())     # s is still the previous step's spikes
        spikes.append(s)
    logits = pm.readout(torch.cat(spikes) @ P["plain_readout_1.O.W"].t() + P["plain_readout_1.O.bias"], T)
    assert compare(net, P, logits, labels, x) == 4
    assert torch.cat(spikes[:-1]).sum() > 0


def test_loop_outputs_are_batched_over_time_for_the_next_layer(tmp_path):
    net = build(tmp_path, RECURRENT_INHIBITION)
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    env = net.run(x, keep=True)
    assert env["recurrent_inhibition_loop_1.E"].shape == (5 * 3, 12)
    assert env["recurrent_inhibition_loop_1.I"].shape == (5 * 3, 3)
    assert torch.equal(env["recurrent_inhibition_loop_1.I"][:3], torch.zeros(3, 3))   # nothing to relay at t = 0
    assert isinstance(net, Network)
    with pytest.raises(eidsl.EidslError, match=r"takes batches of shape \(B, 1, 6, 6\)"):
        net(torch.rand(3, 36, dtype=torch.float64))
