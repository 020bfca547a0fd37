"""`eidsl compile` (spec -> build folder) and `eidsl import-deepeisnn` (reference weights -> eidsl)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from eidsl.cli.app import IncludeOption, SetOption, app, command, out, parse_sets
from eidsl.errors import EidslError


def build_summary(graph, plan) -> dict:
    """What `eidsl describe` reports, plus what the lowering made of it."""
    from eidsl_compiler.plan import walk

    from eidsl.tools.describe import summarize
    summary = summarize(graph)
    steps = list(walk(plan.steps))
    summary["plan"] = {
        "steps": len(steps),
        "fused_projections": sum(1 for s in steps if s.op == "project" and len(s.params.weights) > 1),
        "loops": [list(s.attrs.members) for s in plan.steps if s.op == "loop"],
        "tensors": sum(math.prod(p.shape) for p in plan.params),
    }
    return summary


def print_summary(summary: dict, where: Path) -> None:
    table = Table(title=f"{summary['name']}  →  {where}")
    for col in ("layer", "kind", "E", "I", "parameters", "output shape"):
        table.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    for layer in summary["layers"]:
        table.add_row(layer["name"], layer["kind"], _n(layer.get("E")), _n(layer.get("I")),
                      f"{layer['parameters']:,}", "×".join(map(str, layer["shape"])))
    out.print(table)
    n, plan = summary["neurons"], summary["plan"]
    weighted = sum(1 for layer in summary["layers"] if layer["parameters"])
    out.print(f"layers: {weighted} with weights ({len(summary['layers'])} in all)   "
              f"parameters: {summary['parameters']:,}   "
              f"FLOPs per time step: {summary['flops_per_step']:,} multiply-adds per sample   "
              f"neurons: E {n['E']:,}  I {n['I']:,}" + (f"  sign-free {n['free']:,}" if n.get("free") else "")
              + f"   T = {summary['T']}", highlight=False)
    loops = f", {len(plan['loops'])} recurrent loop(s)" if plan["loops"] else ""
    out.print(f"plan: {plan['steps']} steps, {plan['fused_projections']} fused projections{loops}", highlight=False)


def _n(v) -> str:
    return "" if v in (None, 0) else f"{v:,}"


@app.command("compile")
@command
def compile_spec(file: Path = typer.Argument(..., help=".ei spec file"), sets: Optional[List[str]] = SetOption,
                 include: Optional[List[Path]] = IncludeOption,
                 output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                       help="build folder (default build/<network name>)"),
                 network: Optional[str] = typer.Option(None, "--network", help="which network of the file"),
                 quiet: bool = typer.Option(False, "--quiet", "-q", help="no summary table")):
    """Compile a spec: IR, generated PyTorch module and summary into a build folder."""
    from eidsl.interop.codegen import generate
    from eidsl_compiler.lower import lower

    from eidsl.api import load_graph
    from eidsl.files import atomic_write
    from eidsl.interop.builds import record_latest, spec_record
    overrides = parse_sets(sets)
    graph = load_graph(file, overrides, include or (), network)
    plan = lower(graph)
    source = generate(plan, graph, spec=str(file), sets=overrides)
    summary = build_summary(graph, plan)
    summary["spec"], summary["sets"] = str(file), overrides
    folder = output or Path("build") / graph.name
    atomic_write(folder / "ir.json", graph.dumps() + "\n")
    atomic_write(folder / "model.py", source)
    atomic_write(folder / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    atomic_write(folder / "spec.json", spec_record(file, overrides, graph.name, include or (), network))
    record_latest(folder)
    if not quiet:
        print_summary(summary, folder)
    out.print(f"wrote {folder}/ (ir.json, model.py, summary.json, spec.json)", highlight=False, markup=False)


@app.command("import-deepeisnn")
@command
def import_deepeisnn(ckpt_file: Path = typer.Argument(..., help="reference checkpoint: .pth (model_state_dict) or "
                                                           "model.safetensors"),
                     spec: Path = typer.Option(..., "--spec", help="the eidsl spec of the same architecture"),
                     sets: Optional[List[str]] = SetOption, include: Optional[List[Path]] = IncludeOption,
                     output: Path = typer.Option(..., "--output", "-o", help="OUT.safetensors")):
    """Convert a DeepEISNN (reference implementation) checkpoint into an eidsl checkpoint.

    The file carries the network and the text of its spec (imports included), so `eidsl eval OUT`
    and `eidsl train --weights OUT` work from any folder."""
    from eidsl.interop.deepeisnn import import_deepeisnn as convert
    from eidsl.interop.deepeisnn import read_checkpoint

    from eidsl.train import checkpoint as ckpt
    from eidsl.api import build_graph, load_graph
    from eidsl.train.sources import spec_sources
    if output.suffix != ".safetensors":
        raise EidslError(f"-o must name a .safetensors file, got {output}")
    overrides = parse_sets(sets)
    state = read_checkpoint(ckpt_file)
    graph = load_graph(spec, overrides, include or ())
    if graph.params.get("paper") is False and "paper" not in overrides:
        # A reference checkpoint was trained as DeepEISNN; the spec's own default circuit differs in
        # gradient rules and readout, so the import (and any fine-tuning from it) takes the paper's.
        overrides["paper"] = "true"
        graph = load_graph(spec, overrides, include or ())
        out.print("note: --set paper=true (the reference's circuit and recipe; the spec's default is paper = false)",
                  highlight=False, markup=False)
    net = build_graph(graph)
    mapping = convert(net, state)
    # Absolute paths: they only say where the text came from (spec_text is what was compiled),
    # and must still say so read from another folder.
    meta = {"graph": graph.to_json(), "spec": str(spec.resolve()), "spec_text": spec_sources(spec, include or ()),
            "sets": overrides, "source": str(ckpt_file.resolve()), "imported": "deepeisnn",
            "data": graph.train.get("data"), "data_dir": None}
    ckpt.save(output, net.state_dict(), None, meta)
    out.print(f"imported {len(mapping)} tensors from {ckpt_file} into {output} ({net.plan.name}, "
              f"{sum(p.numel() for p in net.parameters()):,} parameters)", highlight=False, markup=False)
    out.print(f"next: eidsl eval {output}   (fine-tune: eidsl train --weights {output})",
              highlight=False, markup=False)
