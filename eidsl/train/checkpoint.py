"""Checkpoints and state dicts, one module: safetensors files holding weights (keyed by spec path),
the training state and metadata; plain state dicts checked against the model before anything loads.

Weights keep their state-dict keys (``layer_1.E.W_EE``), so the file loads into a
network as is; training-state tensors (momentum buffers, RNG states) live under
``train_state/``, a prefix no parameter path can have. Everything else (epoch,
scheduler, optimiser hyper-parameters, the graph) is JSON in the metadata.

Writes are atomic (eidsl.files.atomic_write), so a process killed mid-save leaves the
previous checkpoint intact. A checkpoint from another spec (another depth, width or ratio)
fails with the tensor that does not fit and both shapes, never with a PyTorch size-mismatch
traceback, and never after loading half of it.

Each file records a SHA-256 of its weights (and one of its training state) in the
metadata; `load` recomputes them and refuses a file whose bytes changed after it was
written. A file from before the checksums loads with `verified = False`, and its
weights must at least be finite.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import save as _to_bytes

from eidsl.errors import HintedError, did_you_mean
from eidsl.files import SaveError, atomic_write  # noqa: F401  (SaveError: callers catch it from here)

FORMAT = "eidsl-checkpoint/1"
STATE = "train_state/"
WEIGHTS_SUM, STATE_SUM = "weights_sha256", "state_sha256"


class CheckpointError(HintedError):
    """A checkpoint is missing, unreadable, not an eidsl checkpoint, or not this network's."""


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    state: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    verified: bool = True     # False: written before checksums, so only the finiteness of the weights was checked


# ---------------------------------------------------------------- state trees with tensors


def _split(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able tree, tensors and arrays replaced by references into `tensors`."""
    if isinstance(obj, torch.Tensor):
        key = f"{STATE}{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"{STATE}{len(tensors)}"
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_split(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: _split(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_split(k, tensors), _split(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(_join(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_join(k, tensors): _join(v, tensors) for k, v in obj["__items__"]}
    return {k: _join(v, tensors) for k, v in obj.items()}


# ---------------------------------------------------------------- save / load


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of names, dtypes, shapes and bytes, in name order: the same for a file and its reload."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save(path: str | Path, weights: dict[str, torch.Tensor], state: dict[str, Any] | None = None,
         meta: dict[str, Any] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    extra: dict[str, torch.Tensor] = {}
    metadata = {"format": FORMAT, "meta": json.dumps(meta or {}), WEIGHTS_SUM: digest(tensors)}
    if state is not None:
        metadata["state"] = json.dumps(_split(state, extra))
        metadata[STATE_SUM] = digest(extra)
    atomic_write(path, _to_bytes({**tensors, **extra}, metadata=metadata))


def _verify(path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor], with_state: bool) -> bool:
    """Refuse tensors whose bytes are not those written; True when a checksum vouched for them."""
    weights = {k: v for k, v in tensors.items() if not k.startswith(STATE)}
    if WEIGHTS_SUM not in metadata:
        bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"{path}: weight {bad[0]} holds inf or NaN (and the file, written before "
                                  "checksums, cannot say whether it was damaged); refusing it")
        return False
    if digest(weights) != metadata[WEIGHTS_SUM]:
        raise CheckpointError(f"{path}: the weights do not match the checksum recorded when the file was written "
                              "(the file was damaged or edited since); refusing it")
    if with_state and STATE_SUM in metadata:
        if digest({k: v for k, v in tensors.items() if k.startswith(STATE)}) != metadata[STATE_SUM]:
            raise CheckpointError(f"{path}: the training state does not match the checksum recorded when the file "
                                  "was written (the file was damaged or edited since); refusing it")
    return True


def load(path: str | Path, with_state: bool = True) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") == "eidsl-state/1":
                raise CheckpointError(f"{path}: weights only, as an older `eidsl import-deepeisnn` wrote them (the "
                                      f"network they belong to is not in the file); import the reference "
                                      f"checkpoint again with this eidsl")
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not an eidsl checkpoint (format {metadata.get('format')!r})")
            keys = [k for k in f.keys() if with_state or not k.startswith(STATE)]
            tensors = {k: f.get_tensor(k) for k in keys}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    verified = _verify(path, metadata, tensors, with_state)
    weights = {k: v for k, v in tensors.items() if not k.startswith(STATE)}
    try:
        # The metadata is text anyone can edit: bad JSON, a list as a dictionary key, a reference
        # to a tensor that is not there all used to escape as internal errors.
        state = _join(json.loads(metadata["state"]), tensors) if with_state and "state" in metadata else None
        meta = json.loads(metadata.get("meta", "{}"))
        if not isinstance(meta, dict) or not (state is None or isinstance(state, dict)):
            raise ValueError("the metadata is not a JSON object")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint metadata ({type(exc).__name__}: {exc})") from None
    return Checkpoint(weights, state, meta, verified)


def header(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata, JSON decoded, without reading its tensors."""
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        return {"meta": json.loads(metadata.get("meta", "{}")), "state": json.loads(metadata.get("state", "null"))}
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None


# The run writes last.safetensors (which records the best epoch) before best.safetensors: a crash
# or full disk between the two leaves best.safetensors one improvement behind. The window is
# recognisable and harmless: last.safetensors then sits at the start of the recorded best epoch,
# so its weights are the best weights. Readers take them from there; `resume` rewrites best.
LAST, BEST = "last.safetensors", "best.safetensors"


def best_weights(folder: str | Path) -> tuple[Path, bool]:
    """(the file holding the weights of the run's recorded best epoch, whether best.safetensors is behind)."""
    folder = Path(folder)
    last, best = folder / LAST, folder / BEST
    if not last.is_file():
        return best, False
    head = header(last)
    claim = (head["state"] or {}).get("best") or {}
    epoch = claim.get("epoch", 0)
    if not epoch:
        return best, False
    held = header(best)["meta"].get("epoch") if best.is_file() else None
    if held == epoch:
        return best, False
    if (head["meta"].get("epoch"), head["meta"].get("batch")) == (epoch, 0):
        return last, True
    raise CheckpointError(f"{best}: holds epoch {held}'s weights, but the run's last checkpoint records its best as "
                          f"epoch {epoch} ({100 * claim.get('accuracy', 0):.2f}%) and no longer holds them")


def load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load a run's `weights` into `net`, or say in one line which keys and shapes do not fit."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} is {tuple(weights[k].shape)} here but {tuple(own[k].shape)} in the network"
              for k in own if k in weights and weights[k].shape != own[k].shape]
    problems = ([f"missing {_some(missing)}"] if missing else []) + \
               ([f"unknown {_some(unexpected)}"] if unexpected else []) + shapes[:2]
    if problems:
        raise CheckpointError(f"{path}: the weights do not fit the network: {'; '.join(problems)}")
    net.load_state_dict({k: v.to(own[k].device) for k, v in weights.items()})


def check_network(meta: dict[str, Any], graph_json: dict[str, Any], path: str | Path, what: str) -> None:
    """Refuse a checkpoint written for another network than `graph_json` (spec positions aside)."""
    saved = meta.get("graph")
    if saved is None or _network(saved) == _network(graph_json):
        return
    mine, theirs = graph_json.get("params", {}), saved.get("params", {})
    differ = [f"{k}={theirs.get(k)!r} there, {mine.get(k)!r} here" for k in sorted({*mine, *theirs})
              if mine.get(k) != theirs.get(k)]
    why = "; ".join(differ[:3]) if differ else "same parameters, different structure (another spec)"
    origin = f" of {meta['spec']}" if meta.get("spec") else ""
    raise CheckpointError(f"{path}: the checkpoint holds network '{saved.get('name')}'{origin}, not the one "
                          f"{what} ('{graph_json.get('name')}'): {why}")


def _network(graph_json: dict[str, Any]) -> Any:
    """What makes a network: everything but where the spec wrote it and its training settings."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "loc"}
        if isinstance(obj, (list, tuple)):
            return [strip(v) for v in obj]
        return obj
    return json.dumps(strip({k: v for k, v in graph_json.items() if k not in ("train", "format")}), sort_keys=True)


def _some(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


# ---------------------------------------------------------------- plain state dicts

# Prefixes that wrappers add to state-dict keys (torch.compile, DistributedDataParallel).
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _inner(model: nn.Module) -> nn.Module:
    """The module inside torch.compile / (Distributed)DataParallel wrappers."""
    while True:
        if type(model).__name__ == "OptimizedModule":
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def _shape(t) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


def mismatches(model: nn.Module, state: dict) -> list[str]:
    """Every way `state` does not fit `model`, in the model's key order; empty when it fits."""
    expected = _inner(model).state_dict()
    given = {_strip(k): v for k, v in state.items()}
    problems = []
    for key, target in expected.items():
        if key not in given:
            problems.append(f"'{key}' {_shape(target)} is missing from the checkpoint")
            continue
        value = given[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"'{key}' in the checkpoint is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(target.shape):
            problems.append(f"'{key}' has shape {_shape(value)} in the checkpoint but {_shape(target)} in the spec")
        elif value.is_floating_point() != target.is_floating_point():
            problems.append(f"'{key}' is {value.dtype} in the checkpoint but {target.dtype} in the spec")
    for key in given:
        if key not in expected:
            close = did_you_mean(key, expected)
            problems.append(f"'{key}' {_shape(given[key]) if isinstance(given[key], torch.Tensor) else ''} "
                            f"in the checkpoint has no place in the spec" + (f" ({close})" if close else ""))
    return problems


def load_state(model: nn.Module, state_dict: dict) -> None:
    """Load an eidsl state dict into `model`, all of it or nothing."""
    problems = mismatches(model, state_dict)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"checkpoint does not match the spec: {problems[0]}{more}",
                              hint="build the model from the spec and --set values the checkpoint was trained with")
    inner = _inner(model)
    own = inner.state_dict()
    inner.load_state_dict({k: v.to(own[k].device) for k, v in ((_strip(k), v) for k, v in state_dict.items())},
                          strict=True)


def save_state(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """The model's state dict as safetensors, written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in _inner(model).state_dict().items()}
    return atomic_write(path, _to_bytes(state, metadata={**(metadata or {}), WEIGHTS_SUM: digest(state)}))


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """An eidsl state dict from .safetensors, or from a .pt/.pth file holding only tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                state, recorded = {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {}).get(WEIGHTS_SUM)
        except Exception as exc:  # safetensors raises several types for damaged files
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
        if recorded is not None and digest(state) != recorded:
            raise CheckpointError(f"{path}: the weights do not match the checksum recorded when the file was "
                                  "written (the file was damaged or edited since); refusing it")
        return state
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: refused to load ({type(exc).__name__}); only plain tensors are "
                              "accepted, never pickled code") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    return data


# ---------------------------------------------------------------- random number generators


def capture_rng(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        rng["data"] = data_generator.get_state()
    return rng


def restore_rng(rng: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if data_generator is not None and "data" in rng:
        data_generator.set_state(rng["data"])
