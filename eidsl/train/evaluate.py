"""Evaluation: data that fits a network, test accuracy, networks rebuilt from checkpoints."""
from __future__ import annotations

import math

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from eidsl.train import checkpoint as ckpt
from eidsl.data import datasets
from eidsl import ir
from eidsl.train import metrics
from eidsl.api import build_graph, unwrap
from eidsl.train.config import ConfigError, TrainConfig
from eidsl.errors import EidslError
from eidsl.train import monitor

LAST, BEST = "last.safetensors", "best.safetensors"


class TrainingError(EidslError):
    """Training or evaluation cannot start: the data does not fit the network."""


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             with_rates: bool = True, sum_over_ranks: Callable | None = None) -> dict[str, Any]:
    """Test loss, accuracy and (eager networks) every population's rate (monitor.py): `rates` of the
    spiking populations, `interneuron_rates` of the rate-coded ones. In multi-process training
    each rank evaluates its share of the test set and `sum_over_ranks` adds up the counts."""
    net = unwrap(model)
    meter = metrics.EpochMeter()
    was_training = model.training
    model.eval()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if with_rates:
            env = net.run(x, keep=True)
            logits, rates = env[net.plan.output], monitor.rates(net, env)
        else:
            logits, rates = model(x), None
        meter.add(F.cross_entropy(logits, y), logits, y, rates)
    model.train(was_training)
    if sum_over_ranks is not None:
        meter = meter.total(sum_over_ranks)
    spiking, interneurons = monitor.split(meter.mean_rates(), monitor.populations(net))
    return {"loss": meter.mean_loss, "accuracy": meter.accuracy, "rates": spiking,
            "interneuron_rates": interneurons}


def check_data_fits(graph: ir.Graph, info: datasets.DatasetInfo, trained: bool = False) -> None:
    """`trained`: the network is a checkpoint's, whose shape a --set cannot change (eval)."""
    inp = graph.node(graph.input_name)
    shape = tuple(info.input_shape[1:] if info.events else info.input_shape)
    # A flat input takes images of the same size flattened (DANN's MLP reads 784 pixels), as the runtime does.
    flat_ok = len(inp.shape) == 1 and not info.events and math.prod(shape) == inp.shape[0]
    if tuple(inp.shape) != shape and not flat_ok:
        dims = ",".join(map(str, shape))
        fix = (f"evaluate it on a dataset of that shape (--data), or train one for this data: eidsl train SPEC "
               f"--set input=[{dims}]" if trained else f"build it for this data with --set input=[{dims}]")
        raise TrainingError(f"dataset '{info.name}' gives inputs of shape {shape} but network '{graph.name}' "
                            f"expects {tuple(inp.shape)}; {fix}")
    if info.events != (inp.encoding == "events"):
        raise TrainingError(f"dataset '{info.name}' is {'event' if info.events else 'static'} data but network "
                            f"'{graph.name}' has a {inp.encoding} input")
    out = graph.node(graph.output).shape
    if out is not None and tuple(out) != (info.classes,):
        fix = (f"evaluate it on a dataset with {out[0]} classes (--data)" if trained
               else f"build it with --set classes={info.classes}")
        raise TrainingError(f"dataset '{info.name}' has {info.classes} classes but network '{graph.name}' "
                            f"outputs {tuple(out)}; {fix}")


def load_data(graph: ir.Graph, cfg: TrainConfig, trained: bool = False):
    """The data, with a random shift the image can take (budget.fit_shift: adapted or refused)."""
    from eidsl.train.budget import fit_shift
    T = graph.node(graph.input_name).T
    train, test, info = datasets.load(cfg.data, cfg.data_dir, T=T, augment=cfg.augment, seed=cfg.seed,
                                       download=cfg.download)
    check_data_fits(graph, info, trained)

    def refuse(field: str, why: str):
        from eidsl.train.config import _bad
        raise ConfigError(_bad(field, getattr(cfg, field), cfg._origin, why))
    cfg._notes += fit_shift(cfg, info, cfg._layers, refuse)
    if cfg.augment and cfg.shift:
        datasets.add_shift(train, info, cfg.shift, cfg.seed)
    return train, test, info


def test_loader(test: Dataset, cfg: TrainConfig, share: slice | None = None) -> DataLoader:
    if share is not None:
        test = Subset(test, range(len(test))[share])
    return DataLoader(test, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.workers)


def checkpoint_path(target: str | Path, best: bool = False) -> Path:
    """A checkpoint file, or the last (or best) checkpoint of a run folder."""
    target = Path(target)
    if not target.is_dir():
        return target
    path = target / "checkpoints" / (BEST if best else LAST)
    if best:
        path, _ = ckpt.best_weights(target / "checkpoints")
    if not path.is_file():
        raise ckpt.CheckpointError(f"{target}: no {path.name} under checkpoints/ (is it a run folder?)")
    return path


def load_network(target: str | Path, best: bool = False, device: str = "cpu"):
    """(network with the checkpoint's weights, checkpoint metadata); the graph travels inside the file."""
    path = checkpoint_path(target, best)
    c = ckpt.load(path, with_state=False)
    if "graph" not in c.meta:
        raise ckpt.CheckpointError(f"{path}: the checkpoint does not describe its network")
    net = build_graph(recorded_graph(c.meta["graph"], path, "the checkpoint"))
    ckpt.load_weights(net, c.weights, path)
    notes = [] if c.verified else [f"{path} was written before checkpoints carried a checksum: its weights are "
                                    "finite, but whether they are the ones trained cannot be checked"]
    if best and path.name == LAST:
        notes.append(f"best.safetensors is behind: the run stopped between writing {path.name} and it; epoch "
                     f"{c.meta.get('epoch')}'s best weights are read from {path.name} (`eidsl train --resume` "
                     "rewrites best.safetensors)")
    return net.to(device), {**c.meta, "notes": notes}


def recorded_graph(data: Any, path: str | Path, where: str) -> ir.Graph:
    """A network recorded in a file (a checkpoint's metadata, a run's graph.json), checked again
    like a spec's before anything is allocated: the file may have been edited or crafted (a
    30-million-neuron layer took 7.7 GB before this), and the size check needs the memory now."""
    from eidsl.lang.checks import check
    try:
        graph = ir.Graph.from_json(data) if isinstance(data, dict) else ir.Graph.loads(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ckpt.CheckpointError(f"{path}: the network described in {where} is unreadable ({exc})") from None
    try:
        return check(graph)
    except EidslError as exc:
        raise ckpt.CheckpointError(f"{path}: the network described in {where} cannot be built: "
                                   f"{' '.join(str(exc).split())}") from None
    except Exception as exc:   # a crafted graph can break the passes' assumptions (no output, ...)
        raise ckpt.CheckpointError(f"{path}: the network described in {where} is inconsistent "
                                   f"({type(exc).__name__}: {exc})") from None


def evaluate_checkpoint(target: str | Path, *, data: str | None = None, data_dir: str | Path | None = None,
                        batch_size: int = 500, device: str = "cpu", best: bool = False) -> dict[str, Any]:
    """Loss, accuracy and per-layer rates on the test split, with what was evaluated: the checkpoint
    file, its metadata (network, spec, epoch), the data set and its size."""
    from eidsl.train.config import resolve
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    path = checkpoint_path(target, best)
    net, meta = load_network(path, False, device)
    saved = {"data": meta.get("data"), "data_dir": meta.get("data_dir")} if data is None else {}
    cfg = resolve([("the checkpoint", saved),
                   ("the command line", {"data": data, "data_dir": None if data_dir is None else str(data_dir),
                                         "eval_batch_size": batch_size, "device": device})])
    _, test, info = load_data(net.graph, cfg, trained=True)
    result = evaluate(net, test_loader(test, cfg), torch.device(device))
    meta = {k: v for k, v in meta.items() if k != "graph"}
    return {**result, "checkpoint": str(path), "meta": meta, "network": net.graph.name, "data": info.name,
            "samples": len(test), "notes": meta.pop("notes", [])}
