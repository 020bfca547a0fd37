"""Interchange and editor commands: `eidsl export nir`, `eidsl fmt`, `eidsl schema train`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from eidsl.cli.app import IncludeOption, SetOption, app, command, err, out, parse_sets
from eidsl.errors import EidslError

export_app = typer.Typer(no_args_is_help=True, help="Write a network in another tool's format.")
schema_app = typer.Typer(no_args_is_help=True, help="JSON Schemas that let editors check eidsl files.")
app.add_typer(export_app, name="export")
app.add_typer(schema_app, name="schema")


def _say(text: str = "", stream=None) -> None:
    (stream or out).print(text, markup=False, highlight=False, soft_wrap=True)


@export_app.command("nir")
@command
def export_nir(file: Path = typer.Argument(..., help=".ei spec"),
               output: Path = typer.Option(..., "--output", "-o", help="the .nir file to write"),
               sets: Optional[List[str]] = SetOption, include: Optional[List[Path]] = IncludeOption,
               weights: Optional[Path] = typer.Option(None, "--weights", help="a .safetensors state dict of this "
                                                      "network, or a run folder (its newest checkpoints/*.safetensors)"),
               lossy: bool = typer.Option(False, "--lossy", help="write the closest graph when NIR cannot express "
                                          "everything (each substitution is reported)"),
               dt: float = typer.Option(1.0, "--dt", help="length of one eidsl time step in NIR's time unit"),
               seed: int = typer.Option(0, "--seed", help="seed of the data-free initial values (no --weights)"),
               data: Optional[str] = typer.Option(None, "--data", help="data set whose test samples measure a "
                                                  "--lossy export's deviation (default: the spec's)"),
               data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="folder holding --data's files"),
               samples: int = typer.Option(256, "--samples", help="test samples the deviation is measured on"),
               verbose: bool = typer.Option(False, "--verbose", "-v", help="also list the exact rewrites and the "
                                            "training rules NIR does not store (no effect on the forward pass)"),
               extension: bool = typer.Option(True, "--extension/--no-extension",
                                              help="also store the exact circuit for eidsl (eidsl-ei/1 metadata, "
                                              "ignored by other NIR tools; about doubles the file)")):
    """Export to NIR (Neuromorphic Intermediate Representation), with a located lossiness report.

    With --lossy, the exported graph and eidsl's network run on a batch and the measured
    deviation (logits, accuracy) heads the report."""
    from eidsl.interop import nir_export as NX

    from eidsl.api import build_graph, load_graph
    graph = load_graph(file, parse_sets(sets), include or ())
    net = build_graph(graph, seed)
    if weights is not None:
        described, trained = NX.load_weights(net, weights), True
    else:
        described, trained = NX.initial_weights_note(seed), False
    net.eval()      # BatchNorm, if any, is folded with its running statistics
    try:
        result = NX.export(graph, net, trained=trained, weights=described, lossy=lossy, dt=dt, source=str(file),
                           extension=extension)
    except NX.LossyExport as exc:     # one report line per construct, never wrapped
        _say(exc.render(), err)
        raise typer.Exit(exc.exit_code)
    if output.is_dir():
        raise EidslError(f"{output} is a folder; -o takes the .nir file to write")
    deviation = None
    if result.blocking:
        from eidsl.interop.nir_deviation import batch, measure
        x, y, source = batch(graph, data, data_dir, samples)
        deviation = measure(graph, net, result.graph, x, y, source, dt)
        result.graph.metadata["deviation"] = deviation.as_metadata()
    try:
        NX.write(result, output)
    except OSError as exc:
        raise EidslError(f"cannot write {output}: {exc.strerror or exc}") from None
    if deviation is not None:
        _say(deviation.line())
    g = result.graph
    _say(f"wrote {output}: {len(g.nodes)} NIR nodes, {len(g.edges)} edges "
         f"(network {graph.name}, T = {graph.node(graph.input_name).T}, dt = {dt:g})")
    # What changes the forward pass (and the weights it ran with) always; exact rewrites on request.
    for note in result.notes:
        if verbose or note.startswith(("weights:", "substituted at")):
            _say(note)
    if extension:
        _say("eidsl-ei/1 extension written: `eidsl import nir` reads the exact circuit back (docs/interop.md)")
    if result.losses:
        blocking = result.blocking
        rules = [x for x in result.losses if not x.blocking]
        _say(f"lossiness report: {len(blocking)} construct(s) not expressible"
             + (" (substituted as stated above)" if blocking else "")
             + f", {len(rules)} training or initialisation rule(s) NIR does not store"
             + ("" if verbose or not rules else " (they do not affect the forward pass; --verbose lists them)"))
        for x in blocking:
            _say(x.line())
        if verbose:
            for x in rules:
                _say(x.line())


@app.command()
@command
def fmt(files: List[Path] = typer.Argument(..., help=".ei files, or folders searched for *.ei"),
        check: bool = typer.Option(False, "--check", help="write nothing; exit 1 if a file would change"),
        diff: bool = typer.Option(False, "--diff", help="write nothing; print what would change as a diff")):
    """Rewrite specs in the canonical layout (comments kept; formatting twice changes nothing)."""
    from eidsl.tools.fmt import format_text, read_spec, unified_diff
    paths: list[Path] = []
    for f in files:
        paths += sorted(f.rglob("*.ei")) if f.is_dir() else [f]
    changed, failed, bugs = [], 0, 0
    for path in paths:
        try:
            text = read_spec(path)
            new = format_text(text, str(path))
        except EidslError as exc:
            _say(exc.render(), err)
            failed += 1
            continue
        except RuntimeError as exc:     # the formatter's own check failed: the file is left as it is
            _say(f"internal error: {exc}", err)
            bugs += 1
            continue
        if new == text:
            continue
        changed.append(path)
        if diff:
            sys.stdout.write(unified_diff(str(path), text, new))
        if not (check or diff):
            _write(path, new)
            _say(f"reformatted {path}")
    if check or diff:
        for path in changed:
            _say(f"would reformat {path}", err if diff else None)
    if bugs:
        raise typer.Exit(3)
    if failed:
        raise typer.Exit(2)
    if check and changed:
        raise typer.Exit(1)


def _write(path: Path, text: str) -> None:
    from eidsl.files import atomic_write
    atomic_write(path, text, mode=path.stat().st_mode & 0o7777)   # a formatted file keeps its permissions


@schema_app.command("train")
@command
def schema_train(output: Optional[Path] = typer.Option(None, "--output", "-o", help="file to write (default: stdout)")):
    """JSON Schema of the training configuration (TOML files, `train` settings)."""
    from eidsl.tools.schema import train_config_schema
    text = json.dumps(train_config_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise EidslError(f"cannot write {output}: {exc.strerror or exc}") from None
    _say(f"wrote {output}")
