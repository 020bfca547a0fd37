"""`eidsl check` and `eidsl describe`: is a spec valid, and what network does it make."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from eidsl.cli.app import IncludeOption, SetOption, app, command, err, out, parse_sets
from eidsl.errors import EidslError


@app.command()
@command
def check(files: List[Path] = typer.Argument(..., help=".ei spec files"), sets: Optional[List[str]] = SetOption,
          include: Optional[List[Path]] = IncludeOption):
    """Parse and check specs: exit 0 when valid, 2 on spec errors."""
    from eidsl.api import load_graph
    failed = 0
    for f in files:
        try:
            g = load_graph(f, parse_sets(sets), include or ())
        except EidslError as exc:
            err.print(exc.render(), markup=False, highlight=False)
            failed += 1
            continue
        out.print(f"{f}: ok ({g.name}, {g.g.number_of_nodes()} nodes)", markup=False, highlight=False)
    if failed:
        raise typer.Exit(2)


@app.command()
@command
def describe(file: Path, sets: Optional[List[str]] = SetOption, include: Optional[List[Path]] = IncludeOption,
             as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout")):
    """Layers, populations, E:I, fan-in, parameters and output shapes of a network."""
    from eidsl.api import load_graph
    from eidsl.tools.describe import summarize
    summary = summarize(load_graph(file, parse_sets(sets), include or ()))
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    table = Table(title=f"{summary['name']}  ({file})")
    for col in ("layer", "kind", "E", "I", "E:I", "fan-in", "parameters", "output shape"):
        table.add_column(col, justify="right" if col not in ("layer", "kind") else "left")
    for layer in summary["layers"]:
        table.add_row(layer["name"], layer["kind"], _blank(layer.get("E")), _blank(layer.get("I")),
                      layer.get("ratio") or "", _blank(layer.get("fan_in")), f"{layer['parameters']:,}",
                      "×".join(map(str, layer["shape"])))
    out.print(table)
    n = summary["neurons"]
    out.print(f"parameters: {summary['parameters']:,}   neurons: E {n['E']:,}  I {n['I']:,}"
              + (f"  sign-free {n['free']:,}" if n.get("free") else "")
              + f"   T = {summary['T']}", highlight=False)


def _blank(v) -> str:
    return "" if v in (None, 0) else f"{v:,}"
