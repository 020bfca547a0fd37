"""`eidsl graph`: draw a spec's circuit from its checked IR (Graphviz text, PNG or SVG)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from eidsl.cli.app import IncludeOption, SetOption, app, command, out, parse_sets
from eidsl.errors import EidslError


@app.command()
@command
def graph(file: Path = typer.Argument(..., help=".ei spec file"),
          output: Path = typer.Option(..., "--output", "-o", help="out.png, out.svg or out.dot"),
          sets: Optional[List[str]] = SetOption, include: Optional[List[Path]] = IncludeOption,
          depth: Optional[int] = typer.Option(None, "--depth", "-d", min=1,
                                              help="collapse nodes to this many levels of motif path "
                                                   "(1: one box per top-level motif call)"),
          engine: str = typer.Option("auto", help="auto (graphviz if installed, else matplotlib), "
                                                  "graphviz or matplotlib")):
    """Draw the circuit: excitatory red arrows, inhibitory blue bars (subtractive solid, divisive dashed)."""
    from eidsl.api import load_graph
    from eidsl.tools.draw import FORMATS, drawing, render
    if output.suffix.lower().lstrip(".") not in FORMATS:
        raise EidslError(f"cannot draw to '{output}': the file must end in .png, .svg or .dot")
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise EidslError(f"--engine takes auto, graphviz or matplotlib, not {engine!r}")
    if not output.parent.exists():
        raise EidslError(f"cannot write '{output}': folder '{output.parent}' does not exist")
    g = load_graph(file, parse_sets(sets), include or ())
    d = drawing(g, depth)
    try:
        used = render(d, output, engine)
    except OSError as exc:
        raise EidslError(f"cannot write '{output}': {exc.strerror or exc}") from None
    out.print(f"{output}: {len(d.nodes)} nodes, {len(d.edges)} edges ({used})", markup=False, highlight=False)
