"""Training memory: spikes kept as bool for the weight gradients (ops.project(binary=True))."""
import pytest
import torch
import torch.nn.functional as F

import eidsl

from conftest import SPECS

CASES = [("mlp.ei", {}, (4, 1, 28, 28)), ("vgg.ei", {"T": "2"}, (2, 3, 32, 32))]


def _step(net, x, y):
    """Gradients of one step, and the float bytes autograd keeps outside the bool-saving projections."""
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t
    net.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(net(x), y)
    loss.backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, sum(kept)


@pytest.mark.parametrize("spec, sets, shape", CASES, ids=["dense", "conv"])
def test_spikes_kept_as_bool_give_the_same_gradients_in_less_memory(spec, sets, shape):
    net = eidsl.build(SPECS / spec, sets=sets)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (shape[0],), generator=torch.Generator().manual_seed(1))
    eidsl.ei_init(net, x)
    assert net.binary_inputs                      # the hidden layers read spikes
    spikes = sum(v.numel() * 4 for k, v in net.run(x, keep=True).items() if k in net.binary_inputs
                 and any(s.op == "project" and s.ins[0] == k for s in net.plan.steps))
    grads, kept = _step(net, x, y)
    net.binary_inputs = frozenset()
    float_grads, float_kept = _step(net, x, y)
    assert grads.keys() == float_grads.keys()
    assert all(torch.equal(grads[k], float_grads[k]) for k in grads)     # bool <-> float is exact
    assert float_kept - kept >= spikes            # the float spikes are no longer kept
