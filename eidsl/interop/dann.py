"""Load the reference DANN weights (Cornford et al. 2021, linclab/ltlwdp) into an eidsl network.

The reference keys its layers ``layers.fc<i>`` (MLP) or ``layers.<position>`` (conv net) and names
tensors by role (``Wex``, ``Wix``, ``Wei``, ``b``, ``g``, ``alpha``, ``e_conv.weight``,
``i_conv.weight``). eidsl's E-I layers are its inhibited populations in forward order; layers are
matched by position and tensors by role. ``alpha`` is the log of g_I, so it goes only into a gain
declared with ``transform = exp``. Nothing is loaded unless every tensor fits.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from eidsl import ir
from eidsl.interop.deepeisnn import ImportError_, check_fit, copy_all

if TYPE_CHECKING:   # torch and the compiler load when a checkpoint does, not with `import eidsl`
    import torch
    from eidsl_compiler.network import Network

# reference tensor name -> eidsl role, and for each the population it lives on ("E" or "I")
_ROLES = {"Wex": ("W_EE", "E"), "e_conv.weight": ("W_EE", "E"), "Wix": ("W_IE", "I"),
          "i_conv.weight": ("W_IE", "I"), "Wei": ("W_EI", "E"), "b": ("b_E", "E"), "g": ("g_E", "E"),
          "alpha": ("g_I", "I")}
_KEY = re.compile(r"^(?P<layer>.*?)\.(?P<name>e_conv\.weight|i_conv\.weight|Wex|Wix|Wei|b|g|alpha)$")


def _rank(layer: str) -> int:
    m = re.search(r"(\d+)$", layer)
    if m is None:
        raise ImportError_(f"reference layer '{layer}' has no position number")
    return int(m[1])


def reference_layers(state: dict[str, torch.Tensor]) -> list[dict[str, str]]:
    """Reference keys grouped per layer, in forward order: [{reference name: key}]."""
    groups: dict[str, dict[str, str]] = {}
    for key in state:
        m = _KEY.match(key)
        if m is None:
            raise ImportError_(f"reference key '{key}' is not a DANN layer tensor "
                               f"(expected <layer>.{{{', '.join(_ROLES)}}})")
        groups.setdefault(m["layer"], {})[m["name"]] = key
    return [groups[k] for k in sorted(groups, key=_rank)]


def model_layers(net: Network) -> list[dict[str, str]]:
    """eidsl's E-I layers in forward order: {role: parameter path} for each inhibited population."""
    specs, graph, layers = net.param_specs, net.graph, []
    for step in net.plan.steps:
        if step.op != "integrate" or not step.params.W_EI:
            continue
        e = step.node
        (i_name, _), = list(graph.in_edges(e, ir.Inhibition))
        by_role = {"E": {}, "I": {}}
        for path, spec in specs.items():
            for side, node in (("E", e), ("I", i_name)):
                if spec.node == node:
                    by_role[side][spec.role] = path
        layers.append(by_role)
    return layers


def import_dann(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Copy a reference DANN state dict (linclab/ltlwdp keys) into the eidsl network `model` (or a
    wrapper of one); returns {reference key: eidsl parameter path}."""
    from eidsl.api import unwrap
    net = unwrap(model)
    ref, ours = reference_layers(state), model_layers(net)
    if len(ref) != len(ours):
        raise ImportError_(f"the checkpoint has {len(ref)} DANN layers, the spec {len(ours)} E-I layers")
    mapping: dict[str, str] = {}
    for index, (theirs, mine) in enumerate(zip(ref, ours)):
        for name, key in theirs.items():
            role, side = _ROLES[name]
            path = mine[side].get(role)
            if path is None:
                raise ImportError_(f"'{key}' ({role}) has no place in E-I layer {index} of the spec: it declares "
                                   f"{', '.join(sorted(mine['E']) + sorted(mine['I'])) or 'nothing'}")
            if name == "alpha" and net.param_specs[path].transform != "exp":
                raise ImportError_(f"'{key}' is log g_I, but '{path}' is stored directly",
                                   ) from None
            check_fit(key, state[key], path, net.tensor(path), role)
            mapping[key] = path
    copy_all(net, state, mapping, "a DANN network")
    return mapping
