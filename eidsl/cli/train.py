"""`eidsl train`, `eidsl eval`, `eidsl plot`."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, List, Optional

import typer

from eidsl.cli.app import IncludeOption, SetOption, app, command, err, out, parse_sets
from eidsl.errors import EidslError
from eidsl.files import read_text


@app.command()
@command
def train(
    ctx: typer.Context,
    source: Optional[str] = typer.Argument(None, help="build folder or .ei spec file; default: the latest build"),
    data: Optional[str] = typer.Option(None, help="dataset name (default from the spec's train block: mnist5k)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding the dataset's files"),
    download: Optional[bool] = typer.Option(None, "--download/--no-download",
                                            help="fetch missing mnist/cifar10/cifar100 files into --data-dir "
                                            "(torchvision's download, checksums checked)"),
    epochs: Optional[int] = typer.Option(None, help="number of epochs"),
    batch_size: Optional[int] = typer.Option(None, help="training batch size"),
    lr: Optional[float] = typer.Option(None, help="peak learning rate"),
    sets: Optional[List[str]] = SetOption,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/<network>-<time>)"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="start from these weights instead of "
                                           "initialising (fine-tuning): a checkpoint from `eidsl train` or "
                                           "`eidsl import-deepeisnn`; without a spec, train its own network"),
    seed: Optional[int] = typer.Option(None, help="seed of every random draw (default 2025)"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the network"),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard",
                                               help="also write TensorBoard event files"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's choice)"),
    strict: Optional[bool] = typer.Option(None, "--strict/--no-strict",
                                          help="stop (exit 5, run saved) when an epoch ends with a health warning: "
                                               "a saturated or silent layer, a non-finite current, a Dale violation"),
    config: Optional[Path] = typer.Option(None, help="TOML file of training settings"),
    include: Optional[List[Path]] = IncludeOption,
    nproc: Optional[int] = typer.Option(None, "--nproc", help="train in N processes on this machine "
                                        "(torchrun + DistributedDataParallel; see docs/training.md for several)"),
):
    """Train a network: sign-constrained SGD, warm-up + cosine, E-I Init, checkpoints every epoch."""
    from eidsl.train import distributed
    options = {"data": data, "data_dir": None if data_dir is None else str(data_dir), "epochs": epochs,
               "batch_size": batch_size, "lr": lr, "seed": seed, "device": device, "compile": compile,
               "tensorboard": tensorboard, "threads": threads, "strict": strict,
               "download": download}
    if weights is not None and resume is not None:
        raise EidslError("--resume continues a run from its own last checkpoint; drop --weights")
    if nproc is not None and nproc != 1:
        _check_nproc(nproc)
        # Settle the settings here, so a mistake is reported once rather than by every process.
        if resume is not None:
            _resumed_settings(resume, options, source, sets, out_dir, config)
        else:
            _fresh_settings(source, parse_sets(sets), include or (), config, options, weights)
        raise typer.Exit(distributed.launch(nproc, ["eidsl.cli", "train", *_command_line(ctx, drop="nproc")]))
    try:
        _train(resume, options, source, sets, include, out_dir, config, weights)
    finally:
        distributed.leave()


def _train(resume, options, source, sets, include, out_dir, config, weights=None) -> None:
    from eidsl.train import distributed
    from eidsl.train.trainer import HealthError, Interrupted, NonFiniteError
    if resume is not None:
        trainer = _resumed(resume, options, source, sets, out_dir, config)
    else:
        trainer = _fresh(source, parse_sets(sets), include or (), config, options, out_dir, weights)
    main = trainer.world.main
    if main:
        out.print(f"run folder: {trainer.run}", markup=False, highlight=False)
    try:
        trainer.fit()
    except EidslError as exc:
        # Every rank stops together on these and rank 0 reports them; any other error may be one rank's own.
        if main or not isinstance(exc, (Interrupted, NonFiniteError, HealthError)):
            prefix = "" if main else f"rank {trainer.world.rank}: "
            # Unwrapped, so the paths and the resume command can be copied from the terminal.
            err.print(prefix + exc.render(), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    except RuntimeError as exc:
        if not trainer.world.distributed:
            raise
        world = trainer.world
        if distributed.is_timeout(exc):
            others = ", ".join(str(r) for r in range(world.size) if r != world.rank)
            err.print(f"error: rank {world.rank} of {world.size} waited {distributed.collective_timeout():g} s for "
                      f"rank(s) {others} in a collective and gave up: one of them is stopped or hung "
                      f"({distributed.TIMEOUT_ENV} sets the wait); the last checkpoint, "
                      f"{trainer.checkpoints / 'last.safetensors'}, is kept",
                      markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        # Mostly a collective that lost its peers because another process died; that one says why.
        text = " ".join(str(exc).split())
        err.print(f"error: rank {trainer.world.rank} stopped: {type(exc).__name__}: {text[:300]} (if another "
                  f"training process died first, its message says why; the last checkpoint, "
                  f"{trainer.checkpoints / 'last.safetensors'}, is kept)",
                  markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if main:
        out.print(trainer.final_line(), markup=False, highlight=False)


def _check_nproc(nproc: int) -> None:
    import os
    if nproc < 1:
        raise EidslError(f"--nproc {nproc}: the number of processes must be at least 1")
    if "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise EidslError("--nproc starts torchrun itself; under torchrun, drop --nproc")


def _command_line(ctx: typer.Context, drop: str) -> list[str]:
    """The options and arguments given on the command line, as arguments again (less `drop`)."""
    args: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        # By name: typer may carry its own copy of click, with its own ParameterSource enum.
        given = getattr(ctx.get_parameter_source(param.name), "name", None) == "COMMANDLINE"
        if param.name == drop or not given:
            continue
        if param.param_type_name == "argument":
            args.append(str(value))
        elif param.is_flag and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                args += [param.opts[0], str(item)]
        else:
            args += [param.opts[0], str(value)]
    return args


def _fresh_settings(source, sets, include, config, options, weights=None):
    from eidsl.train.config import read_toml, resolve
    if weights is not None and source is None:
        graph, spec, sets = _checkpoint_source(weights, sets)
    else:
        graph, spec, sets = resolve_source(source, sets, include)
    layers: list[tuple[str, dict[str, Any]]] = [(f"the train block of {spec}", graph.train)]
    if config is not None:
        layers.append((str(config), read_toml(config)))
    layers += [(f"--{k.replace('_', '-')}", {k: v}) for k, v in options.items()]
    return graph, spec, sets, resolve(layers)


def _fresh(source, sets, include, config, options, out_dir, weights=None):
    from eidsl.train.trainer import Trainer
    graph, spec, sets, cfg = _fresh_settings(source, sets, include, config, options, weights)
    trainer = Trainer(graph, cfg, out_dir or _default_run(graph.name), spec=spec, sets=sets,
                      log=_log, warn=_warn, progress=out.is_terminal, weights=weights, include=include)
    trainer.start()
    return trainer


def _checkpoint_source(weights: Path, sets: dict[str, str]):
    """(graph, spec, sets) of the network a checkpoint holds; its spec text travels inside it."""
    from eidsl import ir
    from eidsl.train.evaluate import checkpoint_path
    from eidsl.train import checkpoint as ckpt
    if sets:
        raise EidslError("--set changes the network, but --weights without a spec trains the checkpoint's own "
                         "network; name the spec as well: eidsl train SPEC --weights FILE --set ...")
    c = ckpt.load(checkpoint_path(weights), with_state=False)
    if "graph" not in c.meta:
        raise ckpt.CheckpointError(f"{weights}: the checkpoint does not describe its network; name its spec: "
                                   f"eidsl train SPEC --weights {weights}")
    return ir.Graph.from_json(c.meta["graph"]), c.meta.get("spec"), c.meta.get("sets") or {}


def _resumed(run: Path, options, source, sets, out_dir, config):
    from eidsl.train.trainer import Trainer
    graph, cfg, saved = _resumed_settings(run, options, source, sets, out_dir, config)
    trainer = Trainer(graph, cfg, run, spec=saved.get("spec"), sets=saved.get("sets"), log=_log, warn=_warn,
                      spec_text=saved.get("spec_text") or {},
                      progress=out.is_terminal)
    trainer.resume()
    if trainer.world.main:
        out.print(f"resuming at epoch {trainer.epoch + 1}" + (f", batch {trainer.batch + 1}" if trainer.batch else ""),
                  markup=False, highlight=False)
    return trainer


def _resumed_settings(run: Path, options, source, sets, out_dir, config):
    from eidsl.train.config import resolve
    fixed = [name for name, given in (("a build or spec", source), ("--set", sets), ("--out", out_dir),
                                      ("--config", config)) if given]
    fixed += [f"--{k.replace('_', '-')}" for k, v in options.items()
              if v is not None and k not in ("device", "tensorboard", "threads", "strict", "download")]
    if fixed:
        raise EidslError(f"--resume continues {run} with its saved settings; drop {', '.join(fixed)}")
    from eidsl.train.evaluate import recorded_graph
    try:
        saved = json.loads(read_text(run / "config.json"))
        text = read_text(run / "graph.json")
    except (OSError, ValueError) as exc:
        raise EidslError(f"{run}: not a run folder that can be resumed ({exc})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        raise EidslError(f"{run}/config.json: not a run's settings (no 'train' table)")
    graph = recorded_graph(text, run / "graph.json", "the run folder")
    changes = {k: v for k, v in options.items() if v is not None}
    cfg = resolve([(f"{run}/config.json", saved["train"]), ("the command line", changes)])
    return graph, cfg, saved


def _log(line: str) -> None:
    out.print(line, markup=False, highlight=False)


def _warn(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def _default_run(name: str) -> Path:
    base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run, k = base, 2
    while run.exists():
        run, k = base.with_name(f"{base.name}-{k}"), k + 1
    return run


# ---------------------------------------------------------------- what to train


def resolve_source(source: str | None, sets: dict[str, str], include=()) -> tuple[Any, str, dict[str, str]]:
    """(graph, spec path, sets) from a spec file, a build folder, or the latest build."""
    from eidsl.api import load_graph
    if source is not None and Path(source).is_file():
        return load_graph(source, sets, include), str(source), sets
    if source is not None and not Path(source).is_dir():
        raise EidslError(f"{source}: no such spec file or build folder")
    build = Path(source) if source is not None else _latest_build()
    try:
        from eidsl.interop.builds import load_build
    except ModuleNotFoundError as exc:
        if exc.name != "eidsl.interop.builds":
            raise
        saved = _read_json(build / "spec.json")
        if "spec" not in saved:
            raise EidslError(f"{build / 'spec.json'}: names no spec; run `eidsl compile SPEC` again")
        info = SimpleNamespace(graph=None, spec=saved["spec"], sets=saved.get("sets") or {},
                               include=saved.get("include") or (), network=saved.get("network"))
    else:
        info = load_build(build)
    merged = {**info.sets, **sets}
    graph = info.graph
    if graph is None or sets:
        includes = (*getattr(info, "include", ()), *include)
        graph = load_graph(info.spec, merged, includes, getattr(info, "network", None))
    return graph, str(info.spec), merged


def _latest_build() -> Path:
    try:
        from eidsl.interop.builds import latest_build
    except ModuleNotFoundError as exc:
        if exc.name != "eidsl.interop.builds":
            raise
        pointer = Path("build") / "LATEST"
        if not pointer.is_file():
            raise EidslError("no build to train: run `eidsl compile SPEC` first, "
                             "or name a spec: eidsl train specs/mlp.ei") from None
        target = Path(pointer.read_text().strip())
        return target if target.is_dir() else Path("build") / target
    return latest_build()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(read_text(path))
    except (OSError, ValueError) as exc:
        raise EidslError(f"{path}: cannot read the build description ({exc})") from None


# ---------------------------------------------------------------- eval and plot


@app.command("eval")
@command
def eval_command(
    target: Path = typer.Argument(..., help="run folder or checkpoint file (.safetensors)"),
    data: Optional[str] = typer.Option(None, help="dataset (default: the one the run trained on)"),
    data_dir: Optional[Path] = typer.Option(None, help="folder holding the dataset's files"),
    batch_size: int = typer.Option(500, help="evaluation batch size"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    best: bool = typer.Option(False, "--best", help="in a run folder, evaluate the best epoch's weights"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's choice)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
):
    """Test loss, accuracy and per-layer firing rates of a trained (or imported) network."""
    from eidsl.train.evaluate import evaluate_checkpoint
    _set_threads(threads)
    r = evaluate_checkpoint(target, data=data, data_dir=data_dir, batch_size=batch_size, device=device,
                            best=best)
    if as_json:
        print(json.dumps(r, indent=1, default=str))
        return
    for note in r.get("notes", []):
        out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    for line in eval_report(r):
        out.print(line, markup=False, highlight=False)


def eval_report(r: dict) -> list[str]:
    """What was evaluated (file, network, where its weights came from), then the numbers."""
    meta = r["meta"]
    if meta.get("imported"):
        origin = f"imported from {meta.get('source')} ({meta['imported']})"
    elif "epoch" in meta:
        origin = f"epoch {meta['epoch']}" + (f", batch {meta['batch']}" if meta.get("batch") else "")
    else:
        origin = "no training record"
    spec = f" of {meta['spec']}" if meta.get("spec") else ""
    sets = " " + " ".join(f"--set {k}={v}" for k, v in meta["sets"].items()) if meta.get("sets") else ""
    lines = [f"checkpoint: {r['checkpoint']} (network {r['network']}{spec}{sets}; {origin})",
             f"data: {r['data']} test split, {r['samples']:,} samples",
             f"test loss: {r['loss']:.4f}   test accuracy: {100 * r['accuracy']:.2f}%"]
    if r.get("rates"):
        width = max(map(len, r["rates"]))
        lines.append("firing rates (spikes per neuron per step):")
        lines += [f"  {name:<{width}}  {rate:.4f}" for name, rate in r["rates"].items()]
    return lines


def _set_threads(threads: Optional[int]) -> None:
    if threads is None:
        return
    if threads < 1:
        raise EidslError(f"--threads {threads}: give at least 1")
    import torch
    torch.set_num_threads(threads)


@app.command()
@command
def plot(run: Path = typer.Argument(..., help="run folder"),
         out_dir: Optional[Path] = typer.Option(None, "--out", help="where to write the PNGs (default RUN/plots)")):
    """Loss/accuracy curves, firing rates per layer, current and weight histograms (PNG)."""
    from eidsl.tools.plot import write_plots
    for path in write_plots(run, out_dir):
        out.print(str(path), markup=False, highlight=False)
