"""The alternative E-I motifs of specs/motifs/: short, valid, buildable, trainable, and built as claimed."""
import networkx as nx
import pytest
import torch

from eidsl import ir
from eidsl.api import build, ei_init, load_graph, unwrap
from eidsl.errors import SpecError
from eidsl.ir import instantaneous

from conftest import SPECS

MOTIFS = SPECS / "motifs"
NAMES = ["ratio", "subtractive", "divisive", "spiking_interneurons", "shared_inhibition", "recurrent_inhibition"]


def hidden(graph, kind, sign=None):
    """Records of the motif's own layers (the std classifier excluded)."""
    return {n: r for n, r in graph.nodes(kind)
            if not n.startswith("classifier_") and (sign is None or r.sign == sign)}


def hidden_inhibitions(graph):
    return [(s, d, e) for s, d, e in graph.edges(ir.Inhibition) if not d.startswith("classifier_")]


def mnist_like(batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, 28, 28, generator=g) < 0.15).float() * torch.rand(batch, 1, 28, 28, generator=g)


def test_the_six_motifs_are_shipped_and_every_motif_file_checks():
    files = sorted(MOTIFS.glob("*.ei"))
    assert set(NAMES) <= {p.stem for p in files}
    for path in files:
        assert load_graph(path).output.startswith("readout")


@pytest.mark.parametrize("name", NAMES)
def test_motif_is_at_most_15_lines_beyond_imports(name):
    lines = [line for line in (MOTIFS / f"{name}.ei").read_text().splitlines()
             if line.strip() and not line.strip().startswith(("#", "import "))]
    assert len(lines) <= 15


@pytest.mark.parametrize("name", NAMES)
def test_motif_builds_runs_and_trains(name):
    torch.manual_seed(0)
    model = build(MOTIFS / f"{name}.ei")
    x = mnist_like(4)
    logits = model(x)                                  # data-free init: runs as built
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    ei_init(model, mnist_like(16, seed=1))            # the paper's data-dependent init
    logits = model(x)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.arange(4)).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) >= len(grads) // 2


@pytest.mark.parametrize("name", NAMES)
def test_motif_layers_are_active_after_ei_init(name):
    """The inits chosen in each file keep every excitatory layer neither silent nor saturated."""
    torch.manual_seed(0)
    model = build(MOTIFS / f"{name}.ei")
    batch = mnist_like(32)
    ei_init(model, batch)
    net = unwrap(model)
    env = net.run(batch, keep=True)
    for node in hidden(net.graph, ir.Population, "exc"):
        rate = env[node].float().mean().item()
        assert 0.02 < rate < 0.95, (node, rate)


def test_ratio_is_a_parameter_that_must_divide():
    sizes = lambda g: [r.size for r in hidden(g, ir.Population, "inh").values()]
    assert sizes(load_graph(MOTIFS / "ratio.ei")) == [120, 60]
    assert sizes(load_graph(MOTIFS / "ratio.ei", sets={"ratio": "2"})) == [240, 120]
    assert sizes(load_graph(MOTIFS / "ratio.ei", ratio=6)) == [80, 40]
    with pytest.raises(SpecError) as info:
        load_graph(MOTIFS / "ratio.ei", sets={"ratio": "7"})
    text = info.value.render()
    assert "population size 480 / 7 = 68.5714 is not a whole number: '/' must divide exactly" in text
    assert "ratio.ei:8:18:" in text                      # at `n / ratio` in the motif
    assert "ratio.ei:18:13: note: in the motif called here" in text


def test_subtractive_motif_has_no_divisive_path():
    g = load_graph(MOTIFS / "subtractive.ei")
    edges = hidden_inhibitions(g)
    assert len(edges) == 2
    assert all(e.subtractive and not e.divisive for _, _, e in edges)
    assert all(r.gain is None for r in hidden(g, ir.Population, "inh").values())   # no g_I
    keys = unwrap(build(MOTIFS / "subtractive.ei")).state_dict()
    assert not any(k.endswith("g_I") and not k.startswith("classifier_") for k in keys)


def test_divisive_motif_has_no_subtractive_path():
    g = load_graph(MOTIFS / "divisive.ei")
    edges = hidden_inhibitions(g)
    assert len(edges) == 2
    assert all(e.divisive and not e.subtractive for _, _, e in edges)
    assert all(r.gain is not None and r.gain.rule == "gain_control"
               for r in hidden(g, ir.Population, "inh").values())


def test_spiking_interneurons_are_lif():
    g = load_graph(MOTIFS / "spiking_interneurons.ei")
    inh = hidden(g, ir.Population, "inh")
    assert len(inh) == 2 and all(r.model == "lif" for r in inh.values())
    for src, dst, _ in hidden_inhibitions(g):
        assert g.node(src).model == "lif" and g.node(dst).sign == "exc"
    # the paper's layer, for contrast: fast-spiking (ReLU) interneurons
    assert {r.model for r in hidden(load_graph(MOTIFS / "ratio.ei"), ir.Population, "inh").values()} == {"relu"}


def test_one_inhibitory_pool_serves_two_consecutive_layers():
    g = load_graph(MOTIFS / "shared_inhibition.ei")
    (pool,) = hidden(g, ir.Population, "inh")
    targets = sorted(dst for dst, e in g.out_edges(pool) if isinstance(e, ir.Inhibition))
    assert targets == ["shared_pair_1.E1", "shared_pair_1.E2"]
    assert isinstance(g.edge("shared_pair_1.E1", "shared_pair_1.E2"), ir.Projection)   # consecutive
    keys = unwrap(build(MOTIFS / "shared_inhibition.ei")).state_dict()
    assert "shared_pair_1.E1.W_EI" in keys and "shared_pair_1.E2.W_EI" in keys


def test_recurrent_inhibition_reads_the_previous_step():
    g = load_graph(MOTIFS / "recurrent_inhibition.ei")
    for layer, source in [("recurrent_layer_1", "flatten_1"), ("recurrent_layer_2", "recurrent_layer_1.E")]:
        edge = g.edge(source, f"{layer}.I")                # driven by the layer's input x ...
        assert isinstance(edge, ir.Projection) and edge.delay == 1   # ... of the previous step
        assert g.edge(f"{layer}.I", f"{layer}.E").delay == 0
    assert nx.is_directed_acyclic_graph(g.g)


def test_recurrent_inhibition_as_a_true_loop():
    g = load_graph(MOTIFS / "recurrent_inhibition.ei", loop=True)
    edge = g.edge("recurrent_layer_1.E", "recurrent_layer_1.I")
    assert edge.delay == 1
    assert not nx.is_directed_acyclic_graph(g.g)                    # E -> I -| E ...
    assert nx.is_directed_acyclic_graph(instantaneous(g))          # ... only through the delay
    try:
        model = build(MOTIFS / "recurrent_inhibition.ei", loop=True, T=2)
    except SpecError as err:
        # A compiler without loop support must say so, at the delayed projection.
        assert "recurrent loops through a delay are not supported" in err.message
        assert err.span.file.endswith("recurrent_inhibition.ei") and err.span.line == 16
        return
    assert torch.isfinite(model(mnist_like(2))).all()
