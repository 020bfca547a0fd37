"""`eidsl bench`: the training benchmark of issue 5 (bench/ package), from the command line."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from eidsl.cli.app import app, command
from eidsl.errors import EidslError, HintedError


@app.command()
@command
def bench(quick: bool = typer.Option(False, "--quick", help="under 3 minutes: VGG-8 and MLP-8, no compile"),
          json_out: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON"),
          device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]"),
          amp: Optional[str] = typer.Option(None, "--amp", help="bf16: autocast every model to bfloat16"),
          channels_last: bool = typer.Option(False, "--channels-last", help="channels-last inputs and weights"),
          threads: int = typer.Option(2, "--threads", help="torch.set_num_threads"),
          cases: Optional[List[str]] = typer.Option(None, "--case", help="vgg8, resnet18, mlp8 (repeatable)"),
          reps: Optional[int] = typer.Option(None, "--reps", help="timed repetitions per model"),
          before: bool = typer.Option(False, "--before", help="also time the plain autograd formulas")):
    """Training step time and peak memory of E-I networks vs their BN-SNN and conv-only floor."""
    try:
        from bench.__main__ import main
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", "bench.__main__"):
            raise
        raise HintedError("the benchmark needs the bench/ folder of the eidsl source tree, which an installed "
                          "eidsl does not carry", hint="run it from a checkout of the repository: "
                          "cd eidsl && eidsl bench (or python -m bench)") from None
    if amp not in (None, "bf16"):
        raise EidslError(f"--amp takes bf16, got {amp!r}")
    argv = ["--device", device, "--threads", str(threads)]
    argv += ["--quick"] if quick else []
    argv += ["--json", str(json_out)] if json_out else []
    argv += ["--amp", amp] if amp else []
    argv += ["--channels-last"] if channels_last else []
    argv += ["--cases", *cases] if cases else []
    argv += ["--reps", str(reps)] if reps else []
    argv += ["--before"] if before else []
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise EidslError(str(exc.code)) from None
        raise
