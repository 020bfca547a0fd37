"""The architecture, checked: one direction of flow between the stages, read from the imports.

text -> eidsl.lang -> eidsl.ir -> eidsl_compiler -> eidsl.train, with eidsl.data, eidsl.interop,
eidsl.tools, eidsl.api and eidsl.cli around them (docs/architecture.md). Imports inside functions
count as much as those at the top of a module.
"""
import ast
from pathlib import Path

import networkx as nx

from conftest import ROOT

STAGES = ("eidsl.lang", "eidsl.train", "eidsl.data", "eidsl.interop", "eidsl.tools", "eidsl.cli", "eidsl_compiler")
# What each stage may read; anything else is a back edge.
ALLOWED = {
    "eidsl.errors": {"eidsl.limits"},
    "eidsl.files": {"eidsl.errors", "eidsl.limits"},
    "eidsl.limits": set(),
    "eidsl.ir": {"eidsl.errors"},
    "eidsl.lang": {"eidsl.errors", "eidsl.ir", "eidsl.limits"},
    "eidsl_compiler": {"eidsl.errors", "eidsl.ir"},
    "eidsl.data": {"eidsl.errors", "eidsl.files", "eidsl.limits"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "compiler":
        parts[0] = "eidsl_compiler"       # the installed name (pyproject.toml)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage(module: str) -> str:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), module)


def imports(path: Path, known: set[str]) -> set[str]:
    """Modules of eidsl that `path` imports, `from eidsl import ir` read as eidsl.ir."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if all(a.name.startswith("__") for a in node.names):
                continue     # `from eidsl import __version__` reads a constant, not the package's face
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= subs or {node.module}
    return {m for m in found if m.split(".")[0] in ("eidsl", "eidsl_compiler")}


def stage_graph() -> nx.DiGraph:
    files = [*(ROOT / "eidsl").rglob("*.py"), *(ROOT / "compiler").rglob("*.py")]
    known = {module_name(f) for f in files}
    graph = nx.DiGraph()
    for f in files:
        src = stage(module_name(f))
        for target in imports(f, known):
            dst = stage(target)
            if dst != src:
                graph.add_edge(src, dst, where=f"{module_name(f)} imports {target}")
    return graph


def test_no_cycle_between_stages():
    graph = stage_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, [" -> ".join(c) + ": " + "; ".join(graph.edges[a, b]["where"]
                                                            for a, b in zip(c, c[1:] + c[:1])) for c in cycles]


def test_each_low_stage_reads_only_the_stages_below_it():
    graph = stage_graph()
    back = [graph.edges[src, dst]["where"] for src, allowed in ALLOWED.items() if src in graph
            for dst in graph.successors(src) if dst not in allowed]
    assert not back, back


def test_the_check_sees_a_back_edge(tmp_path, monkeypatch):
    # The checker itself: a compiler module importing the trainer is reported.
    fake = tmp_path / "compiler"
    fake.mkdir()
    (fake / "bad.py").write_text("from eidsl.train import trainer\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert imports(fake / "bad.py", {"eidsl.train.trainer"}) == {"eidsl.train.trainer"}
    assert stage(module_name(fake / "bad.py")) == "eidsl_compiler"
