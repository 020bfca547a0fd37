"""JSON Schema of the training configuration (needs eidsl/config.py, from the training work)."""
import json

import pytest
from typer.testing import CliRunner

from eidsl.cli import app
from eidsl.errors import EidslError
from eidsl.tools.schema import train_config_schema


def _config_module():
    try:
        import eidsl.train.config
    except ModuleNotFoundError as exc:
        if exc.name == "eidsl.train.config":
            return None
        raise
    return eidsl.train.config


def _types(prop: dict) -> set[str]:
    if "type" in prop:
        return {prop["type"]}
    return {t for alt in prop.get("anyOf", []) for t in _types(alt)}


def test_train_schema(tmp_path):
    if _config_module() is None:
        with pytest.raises(EidslError, match="eidsl/train/config.py"):
            train_config_schema()
        pytest.skip("eidsl.train.config (TrainConfig) is not on this branch yet")
    schema = train_config_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    props = schema["properties"]
    for name in ("epochs", "lr", "batch_size"):
        assert name in props, name
    assert "integer" in _types(props["epochs"]) and "integer" in _types(props["batch_size"])
    assert "number" in _types(props["lr"])

    out = tmp_path / "train.schema.json"
    res = CliRunner().invoke(app, ["schema", "train", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text()) == schema

    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors({"epochs": "many"}))          # a string is not an epoch count


def test_schema_is_the_models_own(monkeypatch):
    """Whatever TrainConfig says reaches the schema: checked with a stand-in model."""
    import sys
    import types

    from pydantic import BaseModel, Field

    class TrainConfig(BaseModel):
        epochs: int = Field(ge=1)
        lr: float = Field(gt=0)
        data: str = "mnist5k"

    fake = types.ModuleType("eidsl.train.config")
    fake.TrainConfig = TrainConfig
    monkeypatch.setitem(sys.modules, "eidsl.train.config", fake)
    schema = train_config_schema()
    assert schema["required"] == ["epochs", "lr"]
    assert schema["properties"]["epochs"] == {"minimum": 1, "title": "Epochs", "type": "integer"}
    assert schema["properties"]["lr"]["exclusiveMinimum"] == 0
    res = CliRunner().invoke(app, ["schema", "train"])
    assert res.exit_code == 0 and json.loads(res.output) == schema
