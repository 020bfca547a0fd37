"""`eidsl sweep`: train every combination of a grid of spec parameters."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from eidsl.cli.app import SetOption, app, command, out, parse_sets


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
          seed: Optional[int] = typer.Option(None, "--seed")):
    """Train every combination (resumable: finished cells are not rerun); write results.md/.json and a plot."""
    from eidsl.train.sweep import Sweep, parse_grid
    from eidsl.tools.sweep_plot import plot_sweep
    train_args = []
    for flag, value in (("--data", data), ("--data-dir", data_dir), ("--epochs", epochs),
                        ("--batch-size", batch_size), ("--lr", lr), ("--seed", seed)):
        if value is not None:
            train_args += [flag, str(value)]
    axes = parse_grid(grid)
    folder = output or Path("runs") / f"sweep-{spec.stem}"
    results = Sweep(spec, axes, folder, parse_sets(sets), train_args).run(
        lambda line: out.print(line, markup=False, highlight=False))
    png = plot_sweep(results, [k for k, _ in axes], folder / "accuracy.png")
    out.print((folder / "results.md").read_text(), markup=False, highlight=False)
    out.print(f"results: {folder / 'results.md'}, {folder / 'results.json'}" + (f", {png}" if png else ""),
              markup=False, highlight=False)
