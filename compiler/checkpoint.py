"""eidsl checkpoints: state dicts keyed by spec path, checked against the model before anything loads.

A checkpoint from another spec (another depth, width or ratio) must fail with the
tensor that does not fit and both shapes, never with a PyTorch size-mismatch
traceback, and never after loading half of it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from eidsl.builds import file_mode
from eidsl.errors import HintedError, did_you_mean

# Prefixes that wrappers add to state-dict keys (torch.compile, DistributedDataParallel).
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


class CheckpointError(HintedError):
    pass


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
    given = {_strip(k): v for k, v in state_dict.items()}
    _inner(model).load_state_dict(given, strict=True)


def save_state(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """The model's state dict as safetensors, written atomically (temporary file, then rename)."""
    from safetensors.torch import save_file
    from eidsl.checkpoint import WEIGHTS_SUM, digest
    path = Path(path)
    state = {k: v.detach().contiguous().clone() for k, v in _inner(model).state_dict().items()}
    metadata = {**(metadata or {}), WEIGHTS_SUM: digest(state)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """An eidsl state dict from .safetensors, or from a .pt/.pth file holding only tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from eidsl.checkpoint import WEIGHTS_SUM, digest
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
