"""Checkpoints: one safetensors file holding the weights, the training state and metadata.

Weights keep their state-dict keys (``layer_1.E.W_EE``), so the file loads into a
network as is; training-state tensors (momentum buffers, RNG states) live under
``train_state/``, a prefix no parameter path can have. Everything else (epoch,
scheduler, optimiser hyper-parameters, the graph) is JSON in the metadata.

Writes are atomic: the bytes go to a temporary file in the same folder, are
fsync'd, then renamed over the target, so a process killed mid-save leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as _to_bytes

from .errors import EidslError

FORMAT = "eidsl-checkpoint/1"
STATE = "train_state/"


class CheckpointError(EidslError):
    """A checkpoint is missing, unreadable, not an eidsl checkpoint, or not this network's."""


class SaveError(CheckpointError, OSError):
    """A file of the run could not be written (disk full, no permission); its previous version is intact.
    Still an OSError, with the original errno, for callers that handle those."""


def write_error(path: Path, exc: OSError) -> SaveError:
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    error = SaveError(f"cannot write {path}: {exc.strerror or exc}; {kept}")
    error.errno = exc.errno
    return error


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    state: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- atomic files


def _write_bytes(f, data: bytes) -> None:
    f.write(data)


def atomic_write(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            _write_bytes(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, text.encode())


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


def save(path: str | Path, weights: dict[str, torch.Tensor], state: dict[str, Any] | None = None,
         meta: dict[str, Any] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    extra: dict[str, torch.Tensor] = {}
    metadata = {"format": FORMAT, "meta": json.dumps(meta or {})}
    if state is not None:
        metadata["state"] = json.dumps(_split(state, extra))
    atomic_write(path, _to_bytes({**tensors, **extra}, metadata=metadata))


def load(path: str | Path, with_state: bool = True) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path}: not an eidsl checkpoint (format {metadata.get('format')!r})")
            keys = [k for k in f.keys() if with_state or not k.startswith(STATE)]
            tensors = {k: f.get_tensor(k) for k in keys}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
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
    return Checkpoint(weights, state, meta)


def load_weights(net: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load `weights` into `net`, or say in one line which keys and shapes do not fit."""
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
