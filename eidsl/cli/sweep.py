"""`eidsl sweep`: train every combination of a grid of spec parameters."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from eidsl.cli.app import SetOption, app, command, out, parse_sets
from eidsl.errors import EidslError


@app.command()
@command
def sweep(spec: Path = typer.Argument(..., help=".ei spec to train"),
          grid: List[str] = typer.Option(..., "--grid", "-g", help="NAME=V1,V2,... (repeatable)"),
          sets: Optional[List[str]] = SetOption,
          output: Optional[Path] = typer.Option(None, "--out", "-o", help="sweep folder (default runs/sweep-SPEC)"),
          data: Optional[str] = typer.Option(None, "--data"),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
          epochs: Optional[int] = typer.Option(None, "--epochs"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size"),
          lr: Optional[float] = typer.Option(None, "--lr"),
          seed: Optional[int] = typer.Option(None, "--seed"),
          threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch in each cell"),
          force: bool = typer.Option(False, "--force", help="rerun every cell, even those finished before")):
    """Train every combination; write results-GRIDKEY.md/.json and a plot.

    Resumable: a cell whose inputs (spec and imported text, --set, training options, eidsl
    version) are unchanged is not rerun; any change gives new cells."""
    from eidsl.train.sweep import Sweep, parse_grid
    from eidsl.tools.sweep_plot import plot_sweep
    train_args = []
    for flag, value in (("--data", data), ("--data-dir", data_dir), ("--epochs", epochs),
                        ("--batch-size", batch_size), ("--lr", lr), ("--seed", seed)):
        if value is not None:
            train_args += [flag, str(value)]
    if threads is not None and threads < 1:
        raise EidslError(f"--threads {threads}: give at least 1")
    if not spec.is_file():
        raise EidslError(f"{spec}: no such spec file")
    axes = parse_grid(grid)
    folder = output or Path("runs") / f"sweep-{spec.stem}"
    sweep = Sweep(spec, axes, folder, parse_sets(sets), train_args, force=force,
                  run_args=[] if threads is None else ["--threads", str(threads)])
    results = sweep.run(lambda line: out.print(line, markup=False, highlight=False))
    md, js = sweep.table_paths()
    png = plot_sweep(results, [k for k, _ in axes], md.with_name(f"accuracy-{md.stem[len('results-'):]}.png"))
    out.print(md.read_text(), markup=False, highlight=False)
    out.print(f"results: {md}, {js}" + (f", {png}" if png else ""), markup=False, highlight=False)
