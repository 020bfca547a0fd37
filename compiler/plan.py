"""The lowered program: a straight-line list of steps over named tensors, plus the parameters they use.

Lowering (``lower.py``) writes it, the runtime (``network.py``) interprets it and
the code generator (``codegen.py``) prints it as a readable PyTorch module.
"""
from __future__ import annotations

from dataclasses import dataclass
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
    transform: str = "none"   # "exp": the circuit uses exp(stored value) (DANN's g_I = exp(alpha))
    grad_scale: float = 1.0   # gradient factor applied in the backward (E-I Prop's 1/d, cSGD's factors)
    decay: float = 1.0        # factor on the optimiser's weight decay (param(..., decay = 0): none)


# ---------------------------------------------------------------- what each kind of step needs
# One frozen record per family of ops, so a runner reads `step.attrs.n_exc`, never a string key.


@dataclass(frozen=True)
class NoAttrs:
    """relu, identity, flatten, global_avgpool, spike_sum."""


@dataclass(frozen=True)
class Steps:
    """repeat_static, fold_events, readout_mean: the number of time steps T."""
    T: int


@dataclass(frozen=True)
class Delay:
    """delay (over the whole sequence, T known) and delay_step (inside a loop, `shape` of one step)."""
    steps: int
    T: int = 0
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Pool:
    kernel: int
    stride: int


@dataclass(frozen=True)
class Project:
    """One matmul/conv with every weight that reads the same source with the same geometry."""
    op: str                   # dense | conv
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class ProjectParams:
    weights: tuple[str, ...]
    biases: tuple[str | None, ...]


@dataclass(frozen=True)
class Inhibitor:
    """One I -| E path: I_sub = W_EI s_I and/or I_div = W_EI (g_I s_I), E-I Prop's settings."""
    subtractive: bool
    divisive: bool
    stabilize: str            # min_positive | epsilon | none
    epsilon: float
    ste: bool                 # straight-through gradient of the stabiliser
    # W_EI's gradient factor (E-I Prop's 1/d, cSGD's) is its ParamSpec.grad_scale, applied once by
    # Network.value (and the generated module's equivalent), so it is not repeated here.


@dataclass(frozen=True)
class Integrate:
    """I_int = g_E (I_EE - sum I_sub) / stabilise(sum I_div) + b_E over `n_exc` excitatory currents
    followed by one s_I per inhibitor; an output layer (`balanced_only`) returns I_EE - I_sub."""
    n_exc: int
    modes: tuple[Inhibitor, ...] = ()
    balanced_only: bool = False
    spatial: bool = False


@dataclass(frozen=True)
class IntegrateParams:
    W_EI: tuple[tuple[str, ...], ...] = ()   # per inhibitor: one shared path, or (sub, div)
    g_I: tuple[str | None, ...] = ()
    g_E: str | None = None
    b_E: str | None = None
    bn: str | None = None


@dataclass(frozen=True)
class Neuron:
    """lif (T steps at once) and lif_step (one step inside a loop)."""
    T: int
    tau: float
    theta: float
    reset: str
    v_reset: float
    detach_reset: bool
    surrogate: str
    alpha: float


@dataclass(frozen=True)
class Loop:
    """The members of a cycle through delayed edges, run one time step at a time."""
    T: int
    body: tuple["Step", ...]
    history: tuple[str, ...]
    members: tuple[str, ...]


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class Step:
    op: str                   # key of the runtime registry
    outs: tuple[str, ...]
    ins: tuple[str, ...]
    node: str                 # the IR node (or edge target) this step computes
    attrs: Any = NoAttrs()    # one of the records above, by op
    params: Any = NoParams()  # ProjectParams, IntegrateParams, or NoParams
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
            yield from walk(step.attrs.body)


def standard_circuit(step: Step) -> bool:
    """One inhibitor, shared W_EI, both paths, min-positive STE, g_E and b_E: the paper's layer,
    run by one fused op (the same values as the general path of the runtime)."""
    modes, p = step.attrs.modes, step.params
    return (len(modes) == 1 and modes[0].subtractive and modes[0].divisive and modes[0].ste
            and modes[0].stabilize == "min_positive" and len(p.W_EI[0]) == 1 and p.g_I[0] is not None
            and p.g_E is not None and p.b_E is not None and not step.attrs.balanced_only)


def fusible_circuits(plan: Plan) -> set[int]:
    """Indices of standard-circuit steps whose current only feeds the LIF step right after them."""
    readers: dict[str, int] = {}
    for step in plan.steps:
        for name in step.ins:
            readers[name] = readers.get(name, 0) + 1
    found = set()
    for i, (step, nxt) in enumerate(zip(plan.steps, plan.steps[1:])):
        if (step.op == "integrate" and nxt.op == "lif" and nxt.ins == step.outs and readers[step.outs[0]] == 1
                and step.outs[0] != plan.output and step.params.bn is None and step.attrs.n_exc >= 1
                and len(step.ins) == step.attrs.n_exc + 1 and standard_circuit(step)):
            found.add(i)
    return found


def static_input(plan: Plan) -> dict[str, bool]:
    """Direct encoding's tensors that hold one static image per sample repeated over T: the repeated
    input and its flattenings (top level), each mapped to whether it must exist as (T*B, ...) because
    something other than a projection or a flatten reads it (a loop, a pool, the output). Their
    projections run on the image once per sample (ops.project_static); empty when none reads them."""
    static: dict[str, bool] = {}
    for step in plan.steps:
        if step.op == "repeat_static" or (step.op == "flatten" and step.ins[0] in static):
            static[step.outs[0]] = step.outs[0] == plan.output
        elif any(name in static for name in step.ins) and step.op != "project":
            static.update({name: True for name in step.ins if name in static})
    if not any(s.op == "project" and s.ins[0] in static for s in plan.steps):
        return {}
    return static
