"""Checkpoints load without executing code, and a damaged one is a one-line error naming the file."""
import ast
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from eidsl.interop.deepeisnn import read_checkpoint
from eidsl.errors import EidslError

from conftest import ROOT


class RunsCode:
    """Unpickling this object runs a shell command: the classic malicious checkpoint."""

    def __init__(self, sentinel):
        self.command = f"touch {sentinel}"

    def __reduce__(self):
        return (os.system, (self.command,))


def one_line_refusal(path) -> str:
    with pytest.raises(EidslError) as info:
        read_checkpoint(path)
    text = info.value.render()
    assert "\n" not in text and str(path) in text
    return text


def test_the_crafted_payload_is_live(tmp_path):
    # Without the guard, unpickling really runs the command: the tests below refuse a real threat.
    sentinel = tmp_path / "SENTINEL"
    pickle.loads(pickle.dumps(RunsCode(sentinel)))
    assert sentinel.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "inside a state dict"])
def test_a_checkpoint_that_runs_code_is_refused_and_runs_nothing(tmp_path, how):
    sentinel = tmp_path / "SENTINEL"
    path = tmp_path / "model.pth"
    if how == "torch.save":
        torch.save(RunsCode(sentinel), path)
    elif how == "pickle.dump":
        path.write_bytes(pickle.dumps(RunsCode(sentinel)))
    else:
        torch.save({"model_state_dict": {"layers.0.weight_ee": torch.ones(2, 2)}, "extra": RunsCode(sentinel)}, path)
    text = one_line_refusal(path)
    assert text.startswith(f"error: {path}: refused: not a plain tensor checkpoint")
    if how != "pickle.dump":
        assert "posix.system" in text          # torch names what it would have called
    assert not sentinel.exists()


def state():
    return {"module.layers.0.weight_ee": torch.arange(6.0).view(2, 3), "module.layers.0.gain_i": torch.ones(2)}


def test_plain_checkpoints_load(tmp_path):
    torch.save({"model_state_dict": state(), "epoch": 3, "best_acc": 0.9}, tmp_path / "ckpt.pth")
    save_file(state(), tmp_path / "model.safetensors")
    save_file(state(), tmp_path / "renamed.pth")          # recognised by content, not by name
    for name in ("ckpt.pth", "model.safetensors", "renamed.pth"):
        loaded = read_checkpoint(tmp_path / name)
        assert sorted(loaded) == ["layers.0.gain_i", "layers.0.weight_ee"]
        assert torch.equal(loaded["layers.0.weight_ee"], torch.arange(6.0).view(2, 3))


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name, damage, message", [
    ("model.safetensors", lambda p: (save_file(state(), p), truncate(p)), "not a readable safetensors file"),
    ("model.safetensors", lambda p: p.write_bytes((2**62).to_bytes(8, "little") + b'{"a":'), "header too large"),
    ("model.safetensors", lambda p: p.write_bytes(os.urandom(64)), "not a readable safetensors file"),
    ("ckpt.pth", lambda p: (torch.save({"model_state_dict": state()}, p), truncate(p)),
     "not a readable checkpoint, damaged or truncated?"),
    ("ckpt.pth", lambda p: (torch.save({"model_state_dict": state()}, p), truncate(p, 0.98)),
     "not a readable checkpoint, damaged or truncated?"),
    ("ckpt.pth", lambda p: p.write_bytes(b""), "(EOFError: empty file)"),
    ("ckpt.pth", lambda p: torch.save({1: torch.ones(1)}, p), "no state dict of named tensors found"),
    ("ckpt.pth", lambda p: torch.save([torch.ones(1)], p), "no state dict of named tensors found"),
    ("ckpt.pth", lambda p: p.mkdir(), "not a file"),
    ("ckpt.pth", lambda p: None, "no such checkpoint"),
], ids=["truncated safetensors", "huge safetensors header", "random bytes", "truncated pth", "pth missing its end",
        "empty pth", "non-string keys", "a list", "a folder", "missing"])
def test_damaged_checkpoints_are_one_line_errors_naming_the_file(tmp_path, name, damage, message):
    path = tmp_path / name
    damage(path)
    text = one_line_refusal(path)
    assert text.startswith(f"error: {path}: ") and message in text


def test_every_torch_load_in_the_package_is_weights_only():
    """Guards the trainer and importer code to come: no torch.load without weights_only=True."""
    offenders = []
    for file in [*(ROOT / "eidsl").rglob("*.py"), *(ROOT / "compiler").rglob("*.py")]:
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and node.func.attr == "load":
                safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            elif owner == "np" and node.func.attr == "load":
                safe = isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False
            elif owner in ("pickle", "marshal", "dill") and node.func.attr in ("load", "loads"):
                safe = False
            else:
                continue
            if not safe:
                offenders.append(f"{file.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_an_imported_state_dict_carries_a_checksum_that_read_state_verifies(tmp_path):
    from eidsl.train.checkpoint import CheckpointError as StateError
    from eidsl.train.checkpoint import read_state, save_state
    net = torch.nn.Linear(3, 2)
    path = save_state(net, tmp_path / "model.safetensors", {"format": "eidsl-state/1"})
    assert torch.equal(read_state(path)["weight"], net.weight.detach())
    data = bytearray(path.read_bytes())
    data[-4:] = struct.pack("<f", float("nan"))           # the last float of the data bytes
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="do not match the checksum recorded"):
        read_state(path)
