"""Evaluation: data that fits a network, test accuracy, networks rebuilt from checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from . import checkpoint as ckpt
from . import data as datasets
from . import ir, metrics, probe
from .api import build_graph, unwrap
from .config import ConfigError, TrainConfig
from .errors import EidslError

LAST, BEST = "last.safetensors", "best.safetensors"


class TrainingError(EidslError):
    """Training or evaluation cannot start: the data does not fit the network."""


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device,
             with_rates: bool = True, sum_over_ranks: Callable | None = None) -> dict[str, Any]:
    """Test loss, accuracy and (eager networks) per-layer firing rates. In multi-process training
    each rank evaluates its share of the test set and `sum_over_ranks` adds up the counts."""
    net = unwrap(model)
    meter = metrics.EpochMeter()
    was_training = model.training
    model.eval()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if with_rates:
            env = net.run(x, keep=True)
            logits, rates = env[net.plan.output], probe.firing_rates(net, env)
        else:
            logits, rates = model(x), None
        meter.add(F.cross_entropy(logits, y), logits, y, rates)
    model.train(was_training)
    if sum_over_ranks is not None:
        meter = meter.total(sum_over_ranks)
    return {"loss": meter.mean_loss, "accuracy": meter.accuracy, "rates": meter.mean_rates()}


def check_data_fits(graph: ir.Graph, info: datasets.DatasetInfo) -> None:
    inp = graph.node(graph.input_name)
    shape = tuple(info.input_shape[1:] if info.events else info.input_shape)
    if tuple(inp.shape) != shape:
        dims = ",".join(map(str, shape))
        raise TrainingError(f"dataset '{info.name}' gives inputs of shape {shape} but network '{graph.name}' "
                            f"expects {tuple(inp.shape)}; build it for this data with --set input=[{dims}]")
    if info.events != (inp.encoding == "events"):
        raise TrainingError(f"dataset '{info.name}' is {'event' if info.events else 'static'} data but network "
                            f"'{graph.name}' has a {inp.encoding} input")
    out = graph.node(graph.output).shape
    if out is not None and tuple(out) != (info.classes,):
        raise TrainingError(f"dataset '{info.name}' has {info.classes} classes but network '{graph.name}' "
                            f"outputs {tuple(out)}; build it with --set classes={info.classes}")


def load_data(graph: ir.Graph, cfg: TrainConfig):
    T = graph.node(graph.input_name).T
    train, test, info = datasets.load(cfg.data, cfg.data_dir, T=T, augment=cfg.augment, seed=cfg.seed,
                                       shift=cfg.shift)
    check_data_fits(graph, info)
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
    return net.to(device), c.meta


def recorded_graph(data: Any, path: str | Path, where: str) -> ir.Graph:
    """A network recorded in a file (a checkpoint's metadata, a run's graph.json), checked again
    like a spec's before anything is allocated: the file may have been edited or crafted (a
    30-million-neuron layer took 7.7 GB before this), and the size check needs the memory now."""
    from .passes import check
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
    from .config import resolve
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    net, meta = load_network(target, best, device)
    saved = {"data": meta.get("data"), "data_dir": meta.get("data_dir")} if data is None else {}
    cfg = resolve([("the checkpoint", saved),
                   ("the command line", {"data": data, "data_dir": None if data_dir is None else str(data_dir),
                                         "eval_batch_size": batch_size, "device": device})])
    _, test, _ = load_data(net.graph, cfg)
    return evaluate(net, test_loader(test, cfg), torch.device(device))
