"""JSON Schema of the training configuration, so editors can check `train` TOML files as they are typed.

The schema is the pydantic model's own (`TrainConfig` in ``eidsl.train.config``), so it
follows the trainer's settings exactly. Point an editor at it, e.g. with a first
line `#:schema ./train.schema.json` in a TOML file (Even Better TOML, taplo).
"""
from __future__ import annotations

from eidsl.errors import EidslError

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def train_config_schema() -> dict:
    """JSON Schema (draft 2020-12, as pydantic writes it) of eidsl.train.config.TrainConfig."""
    try:
        from eidsl.train.config import TrainConfig
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.config":
            raise
        raise EidslError("the training configuration model (eidsl/train/config.py) is not part of this installation") \
            from None
    schema = TrainConfig.model_json_schema()
    return {"$schema": DIALECT, **schema}
