"""The training settings a spec's `train { ... }` block and `eidsl train` accept: their names, types
and bounds (one pydantic model). The language checks a train block against it at its line; the
trainer resolves the sources (spec, TOML file, command line) into it (eidsl/train/config.py)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from eidsl.errors import EidslError
from eidsl.limits import MAX_BATCH, MAX_EPOCHS


class ConfigError(EidslError):
    """A training setting is unknown or out of range."""


class TrainConfig(BaseModel):
    # No inf or NaN anywhere: `--lr inf` used to pass `gt=0` and fail inside the schedule.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    data: str = "mnist5k"
    data_dir: Optional[str] = None
    download: bool = False                 # fetch missing mnist/cifar10/cifar100 files with torchvision
    augment: bool = True
    shift: int = Field(0, ge=0, le=2**16)  # random train-time translation in pixels (zero fill); 0: none
    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    eval_batch_size: int = Field(500, ge=1, le=MAX_BATCH)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0, ge=0, le=MAX_EPOCHS)
    init_lr: float = Field(1e-7, gt=0)     # warm-up start (docs/science.md §4)
    grad_clip: float = Field(0, ge=0)      # max global gradient norm per step; 0: no clipping
    agc: float = Field(0, ge=0)            # unit-wise adaptive clipping: |G_i| <= agc * max(|W_i|, agc_eps); 0: off
    agc_eps: float = Field(1e-3, gt=0)
    optimizer: Literal["sgd", "eg"] = "sgd"   # sgd: step then clamp >= 0; eg: exponentiated gradient
    schedule: Literal["cosine", "constant"] = "cosine"   # after the warm-up
    seed: int = Field(2025, ge=0, lt=2**63)   # the reference code's seed; torch seeds are 64-bit
    device: Literal["cpu", "cuda"] = "cpu"
    compile: bool = False
    workers: int = Field(0, ge=0, le=1024)
    threads: Optional[int] = Field(None, ge=1, le=4096)   # torch intra-op threads; None: torch's default
    eval_every: int = Field(1, ge=1, le=MAX_EPOCHS)
    rate_every: int = Field(10, ge=1, le=2**31)   # batches between firing-rate samples when compiled
    circuit_every: int = Field(50, ge=0, le=2**31)   # batches between circuit-monitor records (circuit.jsonl); 0: off
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
NETWORK_PARAMS = {"T": "T is a network parameter: use --set T=N"}


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
