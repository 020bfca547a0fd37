"""`eidsl analyze`: operation counts, energy, currents, balance and spectra of a spec or a run."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from eidsl.cli.app import IncludeOption, SetOption, app, command, out, parse_sets
from eidsl.errors import EidslError, HintedError

UNIFORM = "uniform"


@app.command()
@command
def analyze(
    target: Path = typer.Argument(..., help="an .ei spec or a run folder"),
    out_dir: Path = typer.Option(..., "-o", "--out", help="folder for analysis.json and the PNG figures"),
    init: bool = typer.Option(False, "--init", help="the network as E-I Init leaves it, before any training "
                                                   "(a run folder's network is rebuilt untrained)"),
    data: Optional[str] = typer.Option(None, help="dataset (default: the spec's train block or the run's); "
                                                  f"'{UNIFORM}': random pixels, for counts without data"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding the dataset's files"),
    sets: Optional[List[str]] = SetOption,
    checkpoint: Optional[Path] = typer.Option(None, help="weights to analyse (default: a run's last checkpoint)"),
    samples: int = typer.Option(64, help="test samples to measure activity on"),
    energy: Optional[List[str]] = typer.Option(None, "--energy", help="override a per-operation energy in pJ: "
                                               "--energy mac=3.1 --energy ac=0.1 (repeatable)"),
    memory: bool = typer.Option(False, "--memory", help="also count memory accesses (no-reuse bound)"),
    seed: int = typer.Option(2025, help="seed of the initialisation and of E-I Init"),
    include: Optional[List[Path]] = IncludeOption,
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write the PNG figures"),
):
    """Operation counts and energy per layer and pathway (E and I, beside the same net as an ANN),
    firing rates of every population, circuit currents, E/I balance and weight spectra."""
    import torch
    if threads is not None:
        torch.set_num_threads(threads)
    if samples < 1:
        raise EidslError(f"--samples {samples}: need at least one sample")
    from eidsl.train.analyze import energy_table
    table = energy_table(_parse_energy(energy))
    result = analyze_target(target, init=init, data=data, data_dir=data_dir, sets=parse_sets(sets),
                            checkpoint=checkpoint, samples=samples, table=table, memory=memory, seed=seed,
                            include=include or ())
    out_dir.mkdir(parents=True, exist_ok=True)
    from eidsl.files import atomic_write as write_atomic
    write_atomic(out_dir / "analysis.json", json.dumps(_finite(result), indent=1))
    _print(result)
    out.print(f"wrote {out_dir / 'analysis.json'}", markup=False, highlight=False)
    if plots:
        from eidsl.tools.analyze_plot import write_figures
        for path in write_figures(result, out_dir, run=target if target.is_dir() else None):
            out.print(f"wrote {path}", markup=False, highlight=False)


def _parse_energy(items) -> dict[str, float]:
    table = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        try:
            table[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise EidslError(f"--energy takes OP=PICOJOULES, got {item!r}")
    return table


def _finite(obj):
    """NaN and inf as null, so analysis.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def analyze_target(target: Path, *, init: bool = False, data: str | None = None, data_dir=None,
                   sets: dict[str, str] | None = None, checkpoint: Path | None = None, samples: int = 64,
                   table: dict[str, float] | None = None, memory: bool = False, seed: int = 2025,
                   include=()) -> dict[str, Any]:
    """Load what TARGET names, measure it on `samples` test inputs, and return the analysis."""
    from eidsl.train import checkpoint as ckpt
    from eidsl import ir
    from eidsl.train.analyze import analyze
    from eidsl.api import build_graph, ei_init, load_graph
    from eidsl.train.evaluate import checkpoint_path

    sets = sets or {}
    saved: dict[str, Any] = {}
    weights_from = None
    if target.is_dir():
        if sets:
            raise EidslError(f"--set changes a spec; {target} is a run folder with its network fixed")
        try:
            graph = ir.Graph.loads((target / "graph.json").read_text())
            saved = json.loads((target / "config.json").read_text()).get("train", {})
        except (OSError, ValueError) as exc:
            raise EidslError(f"{target}: not a run folder (needs graph.json and config.json: {exc})") from None
        if not init:
            weights_from = checkpoint or checkpoint_path(target)
    elif target.is_file():
        graph = load_graph(target, sets, include)
        saved = dict(graph.train)
        weights_from = None if init else checkpoint
    else:
        raise EidslError(f"{target}: no such spec file or run folder")
    if init and checkpoint is not None:
        raise EidslError("--init analyses the untrained network; drop --checkpoint")

    net = build_graph(graph, seed)
    if weights_from is not None:
        c = ckpt.load(weights_from, with_state=False)
        ckpt.load_weights(net, c.weights, weights_from)
    x = _inputs(graph, data or saved.get("data") or "mnist5k",
                data_dir if data_dir is not None else saved.get("data_dir"), samples, seed)
    # Untrained data-dependent weights get E-I Init on the same inputs, as the trainer's first batch would.
    initialised = weights_from is None and any(s.init.data_dependent for s in net.param_specs.values())
    if initialised:
        ei_init(net, x, seed=seed)
    result = analyze(net, x, table=table, memory=memory, with_spectra=True)
    result["state"] = "init" if weights_from is None else "trained"
    result["source"] = {"target": str(target), "checkpoint": None if weights_from is None else str(weights_from),
                        "data": data or saved.get("data") or "mnist5k", "samples": int(x.shape[0]),
                        "ei_init": initialised, "sets": sets}
    return result


def _inputs(graph, name: str, data_dir, samples: int, seed: int):
    import torch

    from eidsl.data import datasets
    from eidsl.train.evaluate import check_data_fits
    inp = graph.node(graph.input_name)
    if name == UNIFORM:
        shape = (samples, inp.T, *inp.shape) if inp.encoding == "events" else (samples, *inp.shape)
        return torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    try:
        _, test, info = datasets.load(name, data_dir, T=inp.T, augment=False, seed=seed)
    except datasets.DataError as exc:
        raise HintedError(str(exc), hint=f"for operation counts without the data set: --data {UNIFORM}") from None
    check_data_fits(graph, info)
    n = min(samples, len(test))
    return torch.stack([test[i][0] for i in range(n)])


def _fmt(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.0f}"


def _print(result: dict) -> None:
    ops = result["ops"]
    rates = result["firing_rates"]
    table = Table(title=f"{result['network']}: per sample, all T = {result['T']} steps ({result['state']})")
    for col in ("layer", "E rate", "I rate", "MACs", "ACs", "elem ops", "energy (nJ)", "ANN (nJ)"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    by_layer_rates: dict[str, dict[str, float]] = {}
    for name, r in rates.items():
        if r["rate"] is not None:
            by_layer_rates.setdefault(r["layer"], {})[r["side"]] = r["rate"]
    for layer, t in ops["by_layer"].items():
        lr = by_layer_rates.get(layer, {})
        elem = t["mults"] + t["adds"] + t["divs"] + t["cmps"]
        table.add_row(layer, _rate(lr.get("E")), _rate(lr.get("I")), _fmt(t["macs"]), _fmt(t["acs"]), _fmt(elem),
                      f"{t['energy_pj'] / 1e3:.2f}", f"{t['ann_energy_pj'] / 1e3:.2f}")
    t = ops["total"]
    table.add_row("total", "", "", _fmt(t["macs"]), _fmt(t["acs"]),
                  _fmt(t["mults"] + t["adds"] + t["divs"] + t["cmps"]),
                  f"{t['energy_pj'] / 1e3:.2f}", f"{t['ann_energy_pj'] / 1e3:.2f}")
    out.print(table)
    side = ops["by_population"]
    ratio = ops["snn_over_ann_energy"]
    out.print(f"energy per inference: {t['energy_pj'] / 1e3:.2f} nJ (E side {side['E']['energy_pj'] / 1e3:.2f}, "
              f"I side {side['I']['energy_pj'] / 1e3:.2f}); as an ANN {t['ann_energy_pj'] / 1e3:.2f} nJ"
              + (f" (SNN/ANN {ratio:.2f})" if ratio else "") + "; compute only, memory traffic left out",
              markup=False, highlight=False)
    for flag in result["flags"]:
        out.print(f"flag: {flag['population']}: {flag['flag']} ({flag['why']})", markup=False, highlight=False)


def _rate(v) -> str:
    return "" if v is None else f"{v:.3f}"
