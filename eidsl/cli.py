"""The `eidsl` command line. Every user error prints a located message and exits 2."""
from __future__ import annotations

import json
import os
import sys
from functools import wraps
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import EidslError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="eidsl: a language and compiler for cortical E-I spiking networks (DeepEISNN).")
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, soft_wrap=True)   # a located error stays one line, as editors parse it

SetOption = typer.Option(None, "--set", "-s", help="override a network parameter: --set depth=8 (repeatable)")
IncludeOption = typer.Option(None, "--include", "-I", help="extra folder that `import` may read from")


def parse_sets(items: Optional[List[str]]) -> dict[str, str]:
    sets = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise EidslError(f"--set takes NAME=VALUE, got {item!r}")
        sets[key.strip()] = value.strip()
    return sets


def command(fn: Callable) -> Callable:
    """Turn eidsl errors into a located message and exit code 2; never a traceback for user errors."""
    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EidslError as exc:
            err.print(exc.render(), markup=False, highlight=False, soft_wrap=True)  # one line in logs too
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug in eidsl, not in the user's input
            if os.environ.get("EIDSL_DEBUG"):
                raise
            err.print(f"internal error: {type(exc).__name__}: {exc}\n"
                      "this is a bug in eidsl; rerun with EIDSL_DEBUG=1 for the traceback", markup=False)
            raise typer.Exit(3)
    return run


@app.command()
@command
def check(files: List[Path] = typer.Argument(..., help=".ei spec files"), sets: Optional[List[str]] = SetOption,
          include: Optional[List[Path]] = IncludeOption):
    """Parse and check specs: exit 0 when valid, 2 on spec errors."""
    from .frontend import load_graph
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
    from .frontend import load_graph
    from .describe import summarize
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


def main() -> None:
    app()


# Commands kept in their own modules register themselves on `app` when imported.
for _module in ("cli_compile", "cli_train", "cli_graph", "cli_tools", "cli_bench", "cli_sweep", "cli_reliability"):
    try:
        __import__(f"{__package__}.{_module}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.{_module}":
            raise

if __name__ == "__main__":
    # Under `python -m eidsl.cli` this file runs as __main__, a second copy of the module; the command
    # modules register on `eidsl.cli.app`, so run that one.
    from eidsl.cli import main as _main
    _main()
