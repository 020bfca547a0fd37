"""Training settings: defaults < the spec's `train { }` block < a TOML file < command-line options.

Every source is validated by one pydantic model; a bad value becomes a one-line
`ConfigError` naming the field and where its value came from.
"""
from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from eidsl.lang.settings import (FIELDS, NETWORK_PARAMS, ConfigError, TrainConfig,  # noqa: F401  (re-exported:
                                 setting_error)                                    # the settings' face)
from eidsl.files import read_text


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
    index: dict[str, int] = {}
    for i, (source, settings) in enumerate(layers):
        for key, value in settings.items():
            if value is None:
                continue
            if key not in FIELDS:
                raise ConfigError(_unknown(key, source))
            merged[key], origin[key], index[key] = value, source, i
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
    if key in NETWORK_PARAMS:
        return f"'{key}' in {source} is not a training setting; {NETWORK_PARAMS[key]}"
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown training setting '{key}' in {source}; {hint}known: {', '.join(FIELDS)}"
