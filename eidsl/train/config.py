"""Training settings: defaults < the spec's `train { }` block < a TOML file < command-line options.

Every source is validated by one pydantic model; a bad value becomes a one-line
`ConfigError` naming the field and where its value came from.
"""
from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from eidsl.errors import EidslError


class ConfigError(EidslError):
    """A training setting is unknown or out of range."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    data: str = "mnist5k"
    data_dir: Optional[str] = None
    download: bool = False                 # fetch missing mnist/cifar10/cifar100 files with torchvision
    augment: bool = True
    shift: int = Field(0, ge=0)            # random train-time translation in pixels (zero fill); 0: none
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(500, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0, ge=0)
    init_lr: float = Field(1e-7, gt=0)     # warm-up start (docs/science.md §4)
    grad_clip: float = Field(0, ge=0)      # max global gradient norm per step; 0: no clipping
    optimizer: Literal["sgd", "eg"] = "sgd"   # sgd: step then clamp >= 0; eg: exponentiated gradient
    schedule: Literal["cosine", "constant"] = "cosine"   # after the warm-up
    seed: int = Field(2025, ge=0)          # the reference code's seed
    device: Literal["cpu", "cuda"] = "cpu"
    compile: bool = False
    workers: int = Field(0, ge=0)
    threads: Optional[int] = Field(None, ge=1)   # torch intra-op threads; None: torch's default
    eval_every: int = Field(1, ge=1)
    rate_every: int = Field(10, ge=1)      # batches between firing-rate samples when compiled
    circuit_every: int = Field(50, ge=0)   # batches between circuit-monitor records (circuit.jsonl); 0: off
    hist_epochs: Optional[list[int]] = None  # epochs whose current/weight histograms are kept; None: a default set
    tensorboard: bool = True               # event files next to metrics.jsonl (which stays the record)
    strict: bool = False                   # stop (exit 5, run saved) on a health warning (health.py)

    # Where each setting came from (resolve), and the settings adapted to the run (budget.py).
    _origin: dict[str, str] = PrivateAttr(default_factory=dict)
    _index: dict[str, int] = PrivateAttr(default_factory=dict)
    _layers: list = PrivateAttr(default_factory=list)
    _notes: list[str] = PrivateAttr(default_factory=list)

    def histogram_epochs(self) -> list[int]:
        if self.hist_epochs is not None:
            return sorted({e for e in self.hist_epochs if 0 <= e <= self.epochs})
        return sorted({0, 1, self.epochs // 4, self.epochs // 2, self.epochs})


FIELDS = tuple(TrainConfig.model_fields)
_NETWORK_PARAMS = {"T": "T is a network parameter: use --set T=N"}


def read_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file: top-level keys, or the keys of its [train] table."""
    try:
        data = tomllib.loads(Path(path).read_text())
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
    index: dict[str, int] = {}
    for i, (source, settings) in enumerate(layers):
        for key, value in settings.items():
            if value is None:
                continue
            if key not in FIELDS:
                raise ConfigError(_unknown(key, source))
            merged[key], origin[key], index[key] = value, source, i
    try:
        cfg = TrainConfig(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise ConfigError(_bad(field, merged.get(field), origin, first["msg"])) from None
    if cfg.warmup_epochs > 0 and cfg.init_lr > cfg.lr:
        raise ConfigError(_bad("init_lr", cfg.init_lr, origin, f"the warm-up must start below lr = {cfg.lr}"))
    from eidsl.train.budget import fit_warmup
    cfg._origin, cfg._index = origin, index
    cfg._layers = [(src, {k: v for k, v in s.items() if v is not None}) for src, s in layers]

    def refuse(field: str, why: str):
        raise ConfigError(_bad(field, getattr(cfg, field), origin, why))
    cfg._notes = fit_warmup(cfg, cfg._layers, index, origin, refuse)
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
