"""The Python API: what the CLI, the trainer, the tests and users all go through.

The compiler and torch are imported inside the functions that need them: the compiler's modules
read `eidsl.ir`, whose package face imports this module, and `import eidsl` (or `eidsl check`)
should not pay for torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from eidsl import ir
from eidsl.lang.checks import check
from eidsl.lang.elaborate import Value, elaborate

if TYPE_CHECKING:
    import torch
    from eidsl_compiler.network import Network


def load_graph(spec: str | Path, sets: dict[str, str] | None = None, include=(), network: str | None = None, *,
               batch: int = 1, memory_limit: float | None = None, **params: Any) -> ir.Graph:
    """Parse, elaborate and check a spec. `sets` are command-line texts, `params` Python values.
    A network whose training step at `batch` needs more than `memory_limit` bytes (None: the memory
    available now, math.inf: no limit) is refused with the estimate."""
    overrides: dict[str, Any] = dict(sets or {})
    overrides.update({k: Value(v) for k, v in params.items()})
    return check(elaborate(spec, overrides, include, network), batch, memory_limit)


def build_graph(graph: ir.Graph, seed: int = 0) -> Network:
    from eidsl_compiler.init import initialise
    from eidsl_compiler.lower import lower
    from eidsl_compiler.network import Network
    net = Network(lower(graph), graph)
    initialise(net, seed)
    return net


def compile_network(model: torch.nn.Module) -> torch.nn.Module:
    """torch.compile for eidsl networks. Inductor's layout optimisation (conv activations turned
    channels-last inside the graph) is off: on CPU it made the compiled E-I VGG-8 step 1.17x the
    eager one, against 0.85-0.96x without it (docs/performance.md).

    A pass that changes nothing but whose uuid hashes the compiler's sources enters inductor's and
    AOT autograd's cache keys: the traced graph calls eidsl's custom ops by name only, so without it a
    network compiled by an older eidsl (whose ops returned other tensors) was loaded from the cache
    and failed, or could have computed the old formulas."""
    import torch
    return torch.compile(model, options={"layout_optimization": False,
                                         "post_grad_custom_post_pass": _compiler_sources_pass()})


def _compiler_sources_digest() -> bytes:
    from torch._inductor.custom_graph_pass import get_hash_for_files

    import eidsl_compiler
    folder = Path(eidsl_compiler.__file__).parent
    return get_hash_for_files(tuple(str(p) for p in sorted(folder.glob("*.py"))))


def _compiler_sources_pass():
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class CompilerSources(CustomGraphPass):
        def __call__(self, graph) -> None:
            return None

        def uuid(self) -> bytes:
            return _compiler_sources_digest()
    return CompilerSources()


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
    from eidsl_compiler.network import Network
    while not isinstance(model, Network):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            raise TypeError(f"not an eidsl network: {type(model).__name__}")
        model = inner
    return model


def ei_init(model: torch.nn.Module, batch: torch.Tensor, seed: int = 2025, reduce=None) -> dict[str, float]:
    """E-I Init (docs/science.md §2) on one batch; returns the balanced scale sigma_w per projection."""
    from eidsl_compiler.init import ei_init as run
    return run(unwrap(model), batch, seed=seed, reduce=reduce)


def optimizer(model: torch.nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
              rule: str = "sgd"):
    """A Dale-preserving optimiser over the spec's declared rules. rule "sgd": momentum, L2 on every
    parameter, then the >= 0 projection of every sign-constrained parameter (clamp after step);
    "eg": exponentiated gradient on the sign-constrained parameters (sign kept by construction).
    Gradient factors the spec declares (cSGD, E-I Prop's 1/d) are already in the gradients."""
    from eidsl_compiler.optim import make_optimizer
    return make_optimizer(unwrap(model), lr, momentum, weight_decay, rule=rule)
