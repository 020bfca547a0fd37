"""`eidsl graph`: the circuit drawn from the IR, with E/I and subtractive/divisive edges told apart."""
import math
import re

import pytest
from typer.testing import CliRunner

from eidsl.tools import draw
from eidsl.api import load_graph
from eidsl.cli import app

from conftest import SPECS

MOTIFS = SPECS / "motifs"


def dot_edges(text: str) -> list[tuple[str, str, dict]]:
    found = []
    for src, dst, attrs in re.findall(r'^\s*"([^"]+)" -> "([^"]+)" \[(.*)\];$', text, re.M):
        found.append((src, dst, dict(re.findall(r'(\w+)="([^"]*)"', attrs))))
    return found


def test_dot_marks_excitation_inhibition_and_its_two_paths():
    edges = dot_edges(draw.to_dot(draw.drawing(load_graph(SPECS / "mlp.ei"))))
    by_pair = {}
    for src, dst, attrs in edges:
        by_pair.setdefault((src, dst), []).append(attrs)
    (exc,) = by_pair[("flatten_1", "layer_1.E")]
    assert exc["color"] == draw.EXC and exc["arrowhead"] == "normal"
    inh = sorted(by_pair[("layer_1.I", "layer_1.E")], key=lambda a: a["style"])
    assert [(a["color"], a["arrowhead"], a["style"], a["label"]) for a in inh] == [
        (draw.INH, "tee", "dashed", "÷"), (draw.INH, "tee", "solid", "−")]
    (readout_inh,) = by_pair[("classifier_1.I", "classifier_1.O")]     # the output layer: subtractive only
    assert readout_inh["style"] == "solid" and readout_inh["arrowhead"] == "tee"
    (flow,) = by_pair[("input", "flatten_1")]
    assert flow["color"] == draw.FLOW
    # every IR projection appears once, every inhibition once per path
    g = load_graph(SPECS / "mlp.ei")
    expected = sum(1 if r.kind != "inhibition" else int(r.subtractive) + int(r.divisive) for _, _, r in g.edges())
    assert len(edges) == expected == 17


def test_motifs_draw_their_own_kind_of_inhibition():
    def inhibitory_styles(spec):
        text = draw.to_dot(draw.drawing(load_graph(MOTIFS / spec)))
        return {a["style"] for s, d, a in dot_edges(text) if a["arrowhead"] == "tee" and not d.startswith("classifier")}
    assert inhibitory_styles("subtractive.ei") == {"solid"}
    assert inhibitory_styles("divisive.ei") == {"dashed"}
    assert inhibitory_styles("ratio.ei") == {"solid", "dashed"}


def test_delayed_projection_is_labelled():
    text = draw.to_dot(draw.drawing(load_graph(MOTIFS / "recurrent_inhibition.ei", loop=True)))
    (edge,) = [a for s, d, a in dot_edges(text) if (s, d) == ("recurrent_layer_1.E", "recurrent_layer_1.I")]
    assert edge["label"] == "t-1" and edge["color"] == draw.EXC and edge["constraint"] == "false"


def test_depth_collapses_motifs_to_boxes():
    g = load_graph(SPECS / "resnet.ei")
    full = draw.drawing(g)
    one = draw.drawing(g, depth=1)
    two = draw.drawing(g, depth=2)
    assert len(one.nodes) < len(two.nodes) < len(full.nodes) == g.g.number_of_nodes()
    assert one.nodes["basic_block_1"].kind == "group"
    assert "basic_block_1.layer_1" in two.nodes and "basic_block_1.layer_1.E" in full.nodes
    # inside a collapsed box the E-I wiring disappears; between boxes the excitatory path stays
    assert all(e.src != e.dst for e in one.edges)
    assert draw.Edge("layer_1", "basic_block_1", "exc") in one.edges
    assert not any(e.kind == "inh" for e in one.edges if not e.dst.startswith("classifier"))
    text = draw.to_dot(two)
    assert 'subgraph "cluster_basic_block_1"' in text and '"basic_block_1.layer_1" [label=' in text
    assert one.nodes["basic_block_1"].label == "basic_block_1\nE 128 · I 32"     # two E-I layers of 64


def test_dot_text_escapes_names():
    assert draw._q('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


@pytest.mark.parametrize("suffix, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<svg")])
def test_pictures_are_written(tmp_path, suffix, magic):
    out = tmp_path / f"net.{suffix}"
    used = draw.render(draw.drawing(load_graph(MOTIFS / "shared_inhibition.ei")), out, engine="matplotlib")
    assert used == "matplotlib"
    data = out.read_bytes()
    assert len(data) > 5000 and magic in data[:400]


def test_cli_graph_writes_the_file_and_refuses_bad_names(tmp_path):
    runner = CliRunner()
    out = tmp_path / "vgg.dot"
    result = runner.invoke(app, ["graph", str(SPECS / "vgg.ei"), "-o", str(out), "--depth", "1", "--set", "depth=11"])
    assert result.exit_code == 0, result.output
    assert "vgg.dot: " in result.stdout and out.read_text().startswith("// vgg:")
    assert sum(1 for line in out.read_text().splitlines() if "shape=box3d" in line) == 9   # 8 convs + classifier
    result = runner.invoke(app, ["graph", str(SPECS / "vgg.ei"), "-o", str(tmp_path / "vgg.jpg")])
    assert result.exit_code == 2 and "must end in .png, .svg or .dot" in result.stderr
    result = runner.invoke(app, ["graph", str(SPECS / "vgg.ei"), "-o", str(tmp_path / "x.png"), "--set", "depth=9"])
    assert result.exit_code == 2 and "depth = 9 is not one of 8, 11, 16, 19" in result.stderr


def test_boxes_name_layer_and_population_and_resnet_boxes_do_not_overlap():
    from eidsl.tools.draw import ROW_GAP, drawing, label_width, layout
    mlp = drawing(load_graph(SPECS / "mlp.ei", {"depth": "4"}))
    assert mlp.nodes["layer_3.E"].label == "layer_3.E · LIF 300"
    assert mlp.nodes["layer_1.I"].label == "layer_1.I · ReLU 125"
    resnet = drawing(load_graph(SPECS / "resnet.ei", memory_limit=math.inf))
    sums = [n.label for key, n in resnet.nodes.items() if key.endswith("sum_1")]
    assert len(sums) == 8 and len(set(sums)) == 8               # every residual sum has its own name
    assert "basic_block_3.sum_1\nspike sum +" in sums
    pos, width, height = layout(resnet)
    boxes = {k: (x, y, label_width(resnet.nodes[k].label) / 2, 0.25 * len(resnet.nodes[k].label.split("\n")))
             for k, (x, y) in pos.items()}
    items = list(boxes.items())
    for i, (a, (xa, ya, wa, ha)) in enumerate(items):
        assert 0 <= xa - wa and xa + wa <= width and 0 <= ya <= height
        for b, (xb, yb, wb, hb) in items[i + 1:]:
            apart_x = abs(xa - xb) >= wa + wb
            apart_y = abs(ya - yb) >= min(ROW_GAP, ha + hb)
            assert apart_x or apart_y, (a, b)
    # A layer's interneurons sit right below its E, so the inhibition bar crosses no other box.
    for key in ("basic_block_3.layer_1", "basic_block_3.layer_3"):
        (xe, ye), (xi, yi) = pos[f"{key}.E"], pos[f"{key}.I"]
        assert xe == xi and abs(ye - yi) == pytest.approx(ROW_GAP)
