"""Load the authors' DeepEISNN weights into an eidsl network (docs/science.md §8, reference-keys/).

The reference names tensors by module path (``layers.3.weight_ei``); eidsl by
spec path (``layer_1.ei_layer_1.E.W_EI``). Both list their E-I layers in forward
order, so layers are matched by position and tensors by paper role. Nothing is
loaded unless every tensor finds its place with the right number of values.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

from typing import TYPE_CHECKING

from eidsl import ir
from eidsl.errors import EidslError
from eidsl.limits import MAX_IMPORT_BYTES, MAX_INFLATE

if TYPE_CHECKING:   # torch and the compiler load when a checkpoint does, not with `import eidsl`
    import torch
    from eidsl_compiler.network import Network

ROLES = ("W_EE", "W_IE", "W_EI", "g_I", "g_E", "b_E")


class ImportError_(EidslError):
    pass


def reference_role(key: str) -> str | None:
    for pattern, role in ((r"(conv_ee\.weight|weight_ee)$", "W_EE"), (r"(conv_ie\.weight|weight_ie)$", "W_IE"),
                          (r"weight_ei$", "W_EI"), (r"gain_i$", "g_I"), (r"gain_e$", "g_E"), (r"\.bias$", "b_E")):
        if re.search(pattern, key):
            return role
    return None


_ROLE_SUFFIX = re.compile(r"\.(conv_ee\.weight|conv_ie\.weight|weight_ee|weight_ie|weight_ei|gain_i|gain_e|bias)$")


def _module_rank(token: str) -> tuple:
    """Registration order of the reference's module names (models/*.py), so that a file whose keys
    come back sorted (safetensors does that) is read in forward order all the same."""
    if token.isdigit():
        return (0, int(token), "")
    m = re.fullmatch(r"(conv|norm)(\d+)", token)
    if m:
        return (1, 2 * int(m[2]) + (m[1] == "norm"), "")
    if token == "downsample":
        return (1, 10_000, "")
    m = re.fullmatch(r"layer(\d+)", token)
    if m:
        return (2, int(m[1]), "")
    if token in ("fc", "final_ei_norm"):
        return (3, token == "final_ei_norm", "")
    return (1, 5_000, token)


def reference_order(key: str) -> tuple:
    """Sort key: the module path in registration order, then W_EE first within a module."""
    m = _ROLE_SUFFIX.search(key)
    module = key[:m.start()] if m else key
    role = reference_role(key)
    return (tuple(_module_rank(t) for t in module.split(".")), ROLES.index(role) if role in ROLES else len(ROLES))


def reference_layers(state: dict[str, torch.Tensor]) -> list[dict[str, str]]:
    """Group reference keys into E-I layers: a layer starts at each W_EE."""
    layers: list[dict[str, str]] = []
    for key in sorted(state, key=reference_order):
        role = reference_role(key)
        if role is None:
            raise ImportError_(f"reference key '{key}' is not part of an E-I layer (BatchNorm checkpoints "
                               "are not DeepEISNN E-I checkpoints)")
        if role == "W_EE":
            layers.append({})
        if not layers or role in layers[-1]:
            raise ImportError_(f"reference key '{key}' ({role}) does not follow the E-I layer layout")
        layers[-1][role] = key
    return layers


def model_layers(net: Network) -> list[dict[str, str]]:
    """eidsl's E-I layers in forward order: each E population with its interneurons."""
    graph = net.graph
    specs = net.param_specs
    layers = []
    for step in net.plan.steps:
        if step.op != "integrate" or not step.params.W_EI:
            continue
        e = step.node
        (i_name, _), = list(graph.in_edges(e, ir.Inhibition))
        layer = {"W_EE": f"{e}.W_EE", "W_IE": f"{i_name}.W_IE", "W_EI": f"{e}.W_EI",
                 "g_I": f"{i_name}.g_I", "g_E": f"{e}.g_E", "b_E": f"{e}.b_E"}
        missing = [p for p in layer.values() if p not in specs]
        if missing:
            raise ImportError_(f"layer '{e}' is not a DeepEISNN E-I layer (no {missing[0].rsplit('.', 1)[1]})")
        layers.append(layer)
    return layers


def import_deepeisnn(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Copy a reference state dict into the eidsl network `model` (or a wrapper of one); returns the
    key mapping (reference -> eidsl)."""
    from eidsl.api import unwrap
    net = unwrap(model)
    ref, ours = reference_layers(state), model_layers(net)
    mapping: dict[str, str] = {}
    for index in range(max(len(ref), len(ours))):
        if index >= len(ref):
            raise ImportError_(f"the checkpoint has {len(ref)} E-I layers, the spec {len(ours)}: "
                               f"nothing for '{ours[index]['W_EE']}'")
        if index >= len(ours):
            raise ImportError_(f"the checkpoint has {len(ref)} E-I layers, the spec {len(ours)}: "
                               f"no place for '{ref[index]['W_EE']}'")
        for role in ROLES:
            key, path = ref[index].get(role), ours[index][role]
            if key is None:
                raise ImportError_(f"reference layer {index} has no {role}")
            target = net.tensor(path)
            check_fit(key, state[key], path, target, role)
            mapping[key] = path
    copy_all(net, state, mapping, "a DeepEISNN E-I network")
    # The reference clamps every constrained tensor at the start of each forward (docs/science.md §3.1), so a
    # stored negative entry never acts there; projecting here keeps that forward, and Dale's law
    # (compiler/dale.py refuses a negative constrained weight on the next forward).
    net.clamp_()
    return mapping


def check_fit(key: str, source: torch.Tensor, path: str, target: torch.Tensor, role: str) -> None:
    """A reference tensor fills an eidsl one when the element counts agree (and, for a weight, the rows)."""
    if source.numel() != target.numel() or (role.startswith("W") and source.shape[0] != target.shape[0]):
        raise ImportError_(f"'{key}' {tuple(source.shape)} does not fit '{path}' {tuple(target.shape)}")


def copy_all(net: Network, state: dict[str, torch.Tensor], mapping: dict[str, str], what: str) -> None:
    """Copy every mapped reference tensor, after refusing a spec tensor that none fills (it would
    keep its fresh values): all of the checkpoint or nothing."""
    import torch
    unfilled = [p for p in net.param_specs if p not in set(mapping.values())]
    if unfilled:
        raise ImportError_(f"the checkpoint has nothing for '{unfilled[0]}' "
                           f"{tuple(net.tensor(unfilled[0]).shape)}" +
                           (f" and {len(unfilled) - 1} more" if len(unfilled) > 1 else "") +
                           f"; the spec is not {what} of the checkpoint's layout")
    with torch.no_grad():
        for key, path in mapping.items():
            target = net.tensor(path)
            target.copy_(state[key].reshape(target.shape))


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A reference training checkpoint (.pth, weights under model_state_dict) or model.safetensors,
    read without executing code. Every failure is one line naming the file."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: " + ("not a file" if path.exists() else "no such checkpoint"))
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors.torch import load_file
        try:
            data = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for damaged files
            raise ImportError_(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    else:
        _check_archive(path)
        data = _torch_load(path)
    if isinstance(data, dict) and "model_state_dict" in data:
        data = data["model_state_dict"]
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                             for k, v in data.items()):
        raise ImportError_(f"{path}: no state dict of named tensors found")
    return {k.removeprefix("module."): v for k, v in data.items()}


def _check_archive(path: Path) -> None:
    """Size a .pth before torch inflates it: its zip directory says what each member becomes.
    A 1 MB file of deflated zeros became 1.6 GB in memory before anything could refuse it."""
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise ImportError_(f"{path}: {size:,} bytes, more than the {MAX_IMPORT_BYTES:,}-byte limit for a "
                           "reference checkpoint")
    if not zipfile.is_zipfile(path):
        return      # the legacy format: tensors are stored as they are, no larger than the file
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ImportError_(f"{path}: not a readable checkpoint, damaged or truncated? ({exc})") from None
    total = sum(m.file_size for m in members)
    if total > MAX_IMPORT_BYTES:
        raise ImportError_(f"{path}: its members would inflate to {total:,} bytes, more than the "
                           f"{MAX_IMPORT_BYTES:,}-byte limit for a reference checkpoint")
    for m in members:
        # torch.save stores members uncompressed: a highly compressed one is made to inflate.
        if m.compress_type != zipfile.ZIP_STORED and m.file_size > MAX_INFLATE * max(m.compress_size, 2**16):
            raise ImportError_(f"{path}: member {m.filename} would inflate {m.compress_size:,} bytes to "
                               f"{m.file_size:,}, more than {MAX_INFLATE} times (torch.save does not compress; "
                               "a compression bomb?)")


def _torch_load(path: Path):
    import torch
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch warns about pickle protocols it reads anyway
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ImportError_(f"{path}: refused: not a plain tensor checkpoint ({_refusal_reason(exc)}); eidsl "
                           "loads only tensors, never pickled objects, which could run code") from None
    except Exception as exc:
        raise ImportError_(f"{path}: not a readable checkpoint, damaged or truncated? "
                           f"({type(exc).__name__}: {_first_line(exc)})") from None


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors starts with the little-endian length of a JSON header, then '{'."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as exc:
        raise ImportError_(f"{path}: cannot read ({exc.strerror})") from None
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else "empty file" if isinstance(exc, EOFError) else "no details"
    text = text.split(". ")[0]     # torch follows the reason with paragraphs of advice
    return text if len(text) <= 200 else text[:200] + "..."


def _refusal_reason(exc: BaseException) -> str:
    """torch's message wraps the useful line ("unsupported GLOBAL posix.system") in boilerplate."""
    for line in str(exc).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line.lower().startswith(("trying to load unsupported", "unsupported")):
            return line.split(". ")[0].rstrip(".")     # not torch's advice to allowlist the global
    return "unsupported content"
