"""Training settings: defaults < the spec's `train { }` block < a TOML file < command-line options.

Every source is validated by one pydantic model; a bad value becomes a one-line
`ConfigError` naming the field and where its value came from.
"""
from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import EidslError
from .limits import MAX_BATCH, MAX_EPOCHS, read_text


class ConfigError(EidslError):
    """A training setting is unknown or out of range."""


class TrainConfig(BaseModel):
    # No inf or NaN anywhere: `--lr inf` used to pass `gt=0` and fail inside the schedule.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    data: str = "mnist5k"
    data_dir: Optional[str] = None
    augment: bool = True
    shift: int = Field(0, ge=0, le=2**16)  # random train-time translation in pixels (zero fill); 0: none
    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    eval_batch_size: int = Field(500, ge=1, le=MAX_BATCH)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0, ge=0, le=MAX_EPOCHS)
    init_lr: float = Field(1e-7, gt=0)     # warm-up start (PAPER.md §4)
    grad_clip: float = Field(0, ge=0)      # max global gradient norm per step; 0: no clipping
    seed: int = Field(2025, ge=0, lt=2**63)   # the reference code's seed; torch seeds are 64-bit
    device: Literal["cpu", "cuda"] = "cpu"
    compile: bool = False
    workers: int = Field(0, ge=0, le=1024)
    threads: Optional[int] = Field(None, ge=1, le=4096)   # torch intra-op threads; None: torch's default
    eval_every: int = Field(1, ge=1, le=MAX_EPOCHS)
    rate_every: int = Field(10, ge=1, le=2**31)   # batches between firing-rate samples when compiled
    hist_epochs: Optional[list[int]] = None  # epochs whose current/weight histograms are kept; None: a default set
    tensorboard: bool = False

    def histogram_epochs(self) -> list[int]:
        if self.hist_epochs is not None:
            return sorted({e for e in self.hist_epochs if 0 <= e <= self.epochs})
        return sorted({0, 1, self.epochs // 4, self.epochs // 2, self.epochs})


FIELDS = tuple(TrainConfig.model_fields)
_NETWORK_PARAMS = {"T": "T is a network parameter: use --set T=N"}


def setting_error(name: str, value: Any) -> str | None:
    """Why `value` is not a valid `name` (a field of TrainConfig), or None when it is."""
    # pydantic takes 1 for true and true for 1; in eidsl truth values are not numbers.
    is_flag = TrainConfig.model_fields[name].annotation is bool
    values = value if isinstance(value, list) else [value]
    if is_flag and not isinstance(value, bool):
        return "must be true or false"
    if not is_flag and any(isinstance(v, bool) for v in values):
        return "true/false is not a number or a name"
    try:
        TrainConfig(**{name: value})
    except ValidationError as exc:
        ours = [e for e in exc.errors() if e["loc"] and e["loc"][0] == name] or exc.errors()
        return ours[0]["msg"]
    return None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys, or the keys of its [train] table."""
    try:
        data = tomllib.loads(read_text(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("train", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [train] must be a table")
    return table


def resolve(layers: list[tuple[str, dict[str, Any]]]) -> TrainConfig:
    """Merge (source description, settings) pairs, later ones winning, and validate."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, settings in layers:
        for key, value in settings.items():
            if value is None:
                continue
            if key not in FIELDS:
                raise ConfigError(_unknown(key, source))
            merged[key], origin[key] = value, source
    for key, value in merged.items():
        why = setting_error(key, value)
        if why is not None:
            raise ConfigError(_bad(key, value, origin, why))
    try:
        cfg = TrainConfig(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise ConfigError(_bad(field, merged.get(field), origin, first["msg"])) from None
    if cfg.warmup_epochs > 0 and cfg.init_lr > cfg.lr:
        raise ConfigError(_bad("init_lr", cfg.init_lr, origin, f"the warm-up must start below lr = {cfg.lr}"))
    return cfg


def _bad(field: str, value: Any, origin: dict[str, str], why: str) -> str:
    where = f" (from {origin[field]})" if field in origin else ""
    return f"training setting '{field}' = {value!r}{where}: {why}"


def _unknown(key: str, source: str) -> str:
    if key in _NETWORK_PARAMS:
        return f"'{key}' in {source} is not a training setting; {_NETWORK_PARAMS[key]}"
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown training setting '{key}' in {source}; {hint}known: {', '.join(FIELDS)}"
