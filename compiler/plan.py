"""The lowered program: a straight-line list of steps over named tensors, plus the parameters they use.

Lowering (``lower.py``) writes it, the runtime (``network.py``) interprets it and
the code generator (``codegen.py``) prints it as a readable PyTorch module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eidsl import ir


@dataclass(frozen=True)
class ParamSpec:
    """One trainable tensor: where it lives, its paper role and how it starts."""
    path: str                 # "<population path>.<name>", e.g. "layer_1.ei_layer_1.E.W_EE"
    shape: tuple[int, ...]
    role: str                 # W_EE, W_IE, W_EI, g_I, g_E, b_E, W, bias
    init: ir.Init
    nonneg: bool              # Dale's law / positive gains: clamped >= 0
    fan_in: int = 1
    node: str = ""            # IR node the parameter belongs to
    used: bool = True         # False for the readout's g_I/g_E/b_E, kept for the reference layout


@dataclass(frozen=True)
class Step:
    op: str                   # key of the runtime registry
    outs: tuple[str, ...]
    ins: tuple[str, ...]
    node: str                 # the IR node (or edge target) this step computes
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)   # role -> path, or list of paths / None
    loc: ir.Loc | None = None


@dataclass
class Plan:
    name: str
    T: int
    input: ir.Input
    steps: list[Step]
    params: list[ParamSpec]
    buffers: list[ParamSpec]  # BatchNorm modules: path and size, listed here for the code generator
    output: str


def walk(steps: list[Step]):
    """Every step, the bodies of loops included, in execution order of one time step."""
    for step in steps:
        yield step
        if step.op == "loop":
            yield from walk(step.attrs["body"])
