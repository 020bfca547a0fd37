"""torch.compile sees each network as one graph: no graph breaks in the forward, and AOTAutograd
derives the backward from that single graph (fullgraph=True would raise on any break)."""
import pytest
import torch
import torch.nn.functional as F

import eidsl

from conftest import SPECS


def compiled_matches_eager(net, x, labels):
    torch._dynamo.reset()
    explained = torch._dynamo.explain(net)(x)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1

    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    F.cross_entropy(compiled(x), labels).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), labels).backward()
    assert grads.keys() == {n for n, p in net.named_parameters() if p.grad is not None}
    for name, p in net.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(compiled(x), net(x), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.parametrize("spec, shape", [("mlp.ei", (2, 1, 28, 28)), ("vgg.ei", (2, 3, 32, 32))], ids=["mlp", "vgg8"])
def test_forward_and_backward_compile_without_graph_breaks(spec, shape):
    net = eidsl.build(SPECS / spec, T=2)     # data-free initial values: the graph does not depend on them
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, generator=gen)
    compiled_matches_eager(net, x, torch.randint(0, 10, (shape[0],), generator=gen))


def test_compiled_networks_are_cached_under_the_compilers_sources(monkeypatch):
    """The traced graph calls eidsl's custom ops by name only: a network compiled by an older eidsl,
    whose circuit op returned (spikes, a, h), was loaded from inductor's cache after the op changed
    and failed with an IndexError. The compile now carries a pass whose uuid hashes the compiler's
    sources, which enters inductor's and AOT autograd's cache keys."""
    from pathlib import Path

    from eidsl import api
    options = {}
    monkeypatch.setattr(torch, "compile", lambda model, **kw: options.update(kw.get("options", {})) or model)
    api.compile_network(torch.nn.Identity())
    tag = options["post_grad_custom_post_pass"]
    import eidsl_compiler
    sources = sorted(Path(eidsl_compiler.__file__).parent.glob("*.py"))
    assert len(sources) > 5
    from torch._inductor.custom_graph_pass import get_hash_for_files
    assert tag.uuid() == get_hash_for_files(tuple(map(str, sources)))
    assert tag(torch.fx.Graph()) is None           # and it changes no graph
