"""The benchmarked networks and one training step (forward, backward, optimiser step) for each."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import eidsl
from eidsl_compiler import ops
from eidsl_compiler.optim import fusable
from eidsl.api import compile_network, unwrap

from .floor import Floor

SPECS = Path(__file__).resolve().parents[1] / "specs"


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    spec: str
    params: dict = field(default_factory=dict)
    batch: int = 16
    input: tuple[int, ...] = (3, 32, 32)
    classes: int = 10


# The paper's circuit (paper = true): the cases are measured against the reference implementation.
CASES = {
    "vgg8": Case("vgg8", "E-I VGG-8", "vgg.ei", {"depth": 8, "paper": True}, 16, (3, 32, 32)),
    "resnet18": Case("resnet18", "E-I ResNet-18", "resnet.ei", {"depth": 18, "paper": True}, 4, (3, 32, 32)),
    "mlp8": Case("mlp8", "E-I MLP-8", "mlp.ei", {"depth": 8, "paper": True}, 128, (1, 28, 28)),
}

# Models of one case: "ei" (eager), "ei_plain" (eager with the plain autograd formulas, i.e. eidsl
# before issue 5), "ei_unhoisted" (eager, the first projection computed T times: before issue 22),
# "ei_compiled", "bn" (BN-SNN of the same shape, fused LIF), "floor".
KINDS = ("ei", "ei_plain", "ei_compiled", "bn", "floor")


@dataclass
class Setup:
    device: str = "cpu"
    amp: str | None = None            # None or "bf16"
    channels_last: bool = False
    T: int = 4
    batch: int | None = None          # None: the case's own batch size


def batch_for(case: Case, setup: Setup, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b = setup.batch or case.batch
    x = torch.rand(b, *case.input, generator=gen)     # non-negative, as the E-I circuit requires
    y = torch.randint(0, case.classes, (b,), generator=gen)
    return x.to(setup.device), y.to(setup.device)


def build(case: Case, kind: str, setup: Setup, x: torch.Tensor) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A ready-to-train model of `kind` and its optimiser; E-I models get E-I Init on `x`."""
    family = "bn" if kind == "bn" else "ei"
    kind = "ei" if kind in ("ei_plain", "ei_unhoisted") else kind
    net = eidsl.build(SPECS / case.spec, family=family, T=setup.T, classes=case.classes,
                      input=list(case.input), **case.params)
    if family == "ei":
        eidsl.ei_init(net, x.cpu())
    if kind == "floor":
        net = Floor(net)
    net = net.to(setup.device)
    if setup.channels_last and len(case.input) == 3:
        net = net.to(memory_format=torch.channels_last)
    if kind == "floor":
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4,
                              fused=fusable(net.parameters()) or None)     # as eidsl.optimizer
    else:
        opt = eidsl.optimizer(net, lr=1e-3 if family == "ei" else 1e-2)
    if kind == "ei_compiled":
        net = compile_network(net)
    return net, opt


def autocast(setup: Setup):
    if setup.amp == "bf16":
        return torch.autocast(setup.device.split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               setup: Setup, plain: bool = False, hoist: bool = True) -> Callable[[], None]:
    if setup.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if setup.device.startswith("cuda") else (lambda: None)

    def step() -> None:
        with ops.use_fused(not plain), ops.hoist_static(hoist):
            opt.zero_grad(set_to_none=True)
            with autocast(setup):
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
        sync()
    return step


def logits(model: torch.nn.Module, x: torch.Tensor, setup: Setup) -> torch.Tensor:
    with torch.no_grad(), autocast(setup):
        return model(x).float()


def inner(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model) if not isinstance(model, Floor) else model


__all__ = ["CASES", "KINDS", "Case", "Setup", "batch_for", "build", "train_step", "logits", "unwrap"]
