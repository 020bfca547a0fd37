"""The Python API: what the CLI, the trainer, the tests and users all go through."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compiler import init as _init
from compiler import optim as _optim
from compiler.importer import import_deepeisnn as _import
from compiler.lower import lower
from compiler.network import Network, initialise

from . import ir
from .frontend import load_graph  # noqa: F401  (part of the API; torch-free for the CLI's check)


def build_graph(graph: ir.Graph, seed: int = 0) -> Network:
    net = Network(lower(graph), graph)
    initialise(net, seed)
    return net


def compile_network(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile for eidsl networks. Inductor's layout optimisation (conv activations turned
    channels-last inside the graph) is off: on CPU it made the compiled E-I VGG-8 step 1.17x the
    eager one, against 0.85-0.96x without it (docs/performance.md)."""
    return torch.compile(model, options={"layout_optimization": False})


def build(spec: str | Path, *, compile: bool = False, seed: int = 0, sets: dict[str, str] | None = None,
          include=(), network: str | None = None, batch: int = 1, memory_limit: float | None = None,
          **params: Any) -> torch.nn.Module:
    """Spec -> eager PyTorch module (or a torch.compile'd one). Forward: (B, ...) -> logits (B, classes).
    Refused before anything is allocated when training at `batch` would exceed `memory_limit`."""
    graph = load_graph(spec, sets, include, network, batch=batch, memory_limit=memory_limit, **params)
    net = build_graph(graph, seed)
    return compile_network(net) if compile else net


def unwrap(model: torch.nn.Module) -> Network:
    """The eidsl Network inside a torch.compile or DistributedDataParallel wrapper."""
    while not isinstance(model, Network):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            raise TypeError(f"not an eidsl network: {type(model).__name__}")
        model = inner
    return model


def ei_init(model: torch.nn.Module, batch: torch.Tensor, seed: int = 2025, reduce=None) -> dict[str, float]:
    """E-I Init (PAPER.md §2) on one batch; returns the balanced scale sigma_w per projection."""
    return _init.ei_init(unwrap(model), batch, seed=seed, reduce=reduce)


def optimizer(model: torch.nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
    """Sign-constrained SGD: momentum, L2 on every parameter, >= 0 projection for Dale's law."""
    return _optim.make_optimizer(unwrap(model), lr, momentum, weight_decay)


def import_deepeisnn(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
    """Load a reference DeepEISNN state dict; returns the key mapping."""
    return _import(unwrap(model), state_dict)
