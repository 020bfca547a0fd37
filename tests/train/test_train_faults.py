"""Trainer faults at the process level: SIGKILL in a checkpoint write, damaged or foreign
checkpoints, unreadable data, a full disk, non-finite currents. Each error is one line
saying what and where, exits non-zero, and leaves every file saved before untouched."""
import errno
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, SPECS
from eidsl import files
from eidsl.train import checkpoint as ckpt
from eidsl.train import metrics
from eidsl.api import build_graph, load_graph
from eidsl.train.config import TrainConfig
from eidsl.train.trainer import Interrupted, NonFiniteError, Trainer
from test_train import TINY, TINY_ARGS, cli, tiny_trainer

LAST = os.path.join("checkpoints", "last.safetensors")
TRAIN_ARGS = [*TINY_ARGS, "--data", "digits", "--seed", 7, "--batch-size", 128, "--lr", 0.01, "--threads", 1]


def _snapshot(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _error_line(output):
    lines = output.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("error: "), output
    return lines[-1]


def _stop_after_first_epoch(trainer):
    if trainer.epoch == 1:
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A 2-epoch run stopped after epoch 1: last and best checkpoints, one metrics line."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    trainer = tiny_trainer(run, {"epochs": 2}, on_epoch_end=_stop_after_first_epoch)
    trainer.start()
    with pytest.raises(Interrupted):
        trainer.fit()
    return run


@pytest.fixture
def run_copy(stopped_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    return run


# ---------------------------------------------------------------- SIGKILL in a checkpoint write

# Runs `eidsl train` with the second write of last.safetensors (epoch 2's) stopped half-way
# until the test kills the process; the patch lives in this test, not in eidsl.
KILLED_MID_SAVE = """
import os, sys, time
from eidsl import files
from eidsl.train import checkpoint as ckpt
marker, writes, real = sys.argv[1], [], files._write_bytes
def half_then_hang(f, data):
    if ".last.safetensors.tmp-" in f.name:
        writes.append(f.name)
        if len(writes) == 2:
            f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
            open(marker, "w").close()
            time.sleep(600)
    real(f, data)
files._write_bytes = half_then_hang
sys.argv = ["eidsl", *sys.argv[2:]]
from eidsl.cli import main
main()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigkill_mid_checkpoint_write_keeps_the_previous_one_and_resume_continues(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "half-written"
    cmd = [sys.executable, "-c", KILLED_MID_SAVE, str(marker), "train", str(SPECS / "mlp.ei"),
           *map(str, TRAIN_ARGS), "--epochs", "2", "--out", str(run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the trainer exited with {proc.poll()} before its second save"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    torn = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".last.safetensors.tmp-")]
    assert len(torn) == 1 and torn[0].stat().st_size < (run / LAST).stat().st_size
    kept = ckpt.load(run / LAST)
    assert (kept.state["epoch"], kept.state["batch"]) == (1, 0)
    assert all(torch.isfinite(w).all() for w in kept.weights.values())
    # Epoch 2's line was appended before its checkpoint; resuming drops it and trains epoch 2 again.
    assert [r["epoch"] for r in metrics.read(run / "metrics.jsonl")] == [1, 2]

    code, output = cli("train", "--resume", run)
    assert code == 0, output
    assert "resuming at epoch 2" in output
    assert [r["epoch"] for r in metrics.read(run / "metrics.jsonl")] == [1, 2]
    assert ckpt.load(run / LAST).state["epoch"] == 2


# ---------------------------------------------------------------- damaged checkpoints


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _scribble(path):
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32          # inside the JSON header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _scribble, lambda p: p.write_bytes(b"")],
                         ids=["truncated", "corrupt-header", "empty"])
def test_damaged_checkpoint_on_resume_and_eval_is_one_line_and_changes_nothing(run_copy, damage):
    damage(run_copy / LAST)
    before = _snapshot(run_copy)
    for args in (("train", "--resume", run_copy), ("eval", run_copy), ("eval", run_copy / LAST)):
        code, output = cli(*args)
        assert code == 2, output
        line = _error_line(output)
        assert line.startswith(f"error: {run_copy / LAST}: unreadable checkpoint ("), line
        assert "Traceback" not in output
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize("sets, why", [({"depth": "4"}, "depth=4 there, 2 here"),
                                       ({"T": "2"}, "T=2 there, 4 here")])
def test_checkpoint_of_another_network_is_refused_on_resume(run_copy, sets, why):
    # T=2 has the same weight shapes: only the recorded network tells the checkpoints apart.
    other = load_graph(SPECS / "mlp.ei", {**TINY, **sets})
    theirs = ckpt.load(run_copy / LAST)
    weights = build_graph(other).state_dict() if "depth" in sets else theirs.weights
    ckpt.save(run_copy / LAST, weights, theirs.state, {**theirs.meta, "graph": other.to_json()})
    before = _snapshot(run_copy)
    code, output = cli("train", "--resume", run_copy)
    assert code == 2, output
    line = _error_line(output)
    assert line.startswith(f"error: {run_copy / LAST}: the checkpoint holds network 'mlp' of "), line
    assert f"not the one the run {run_copy} trains ('mlp'): {why}" in line
    assert _snapshot(run_copy) == before


def test_weights_that_do_not_fit_the_recorded_network_are_one_line(run_copy):
    saved = ckpt.load(run_copy / LAST)
    weights = {**saved.weights, "layer_1.E.W_EE": torch.zeros(3, 64)}
    del weights["layer_1.E.b_E"]
    ckpt.save(run_copy / LAST, weights, saved.state, saved.meta)
    for args in (("eval", run_copy), ("train", "--resume", run_copy)):
        code, output = cli(*args)
        assert code == 2, output
        assert _error_line(output) == (f"error: {run_copy / LAST}: the weights do not fit the network: missing "
                                       "layer_1.E.b_E; layer_1.E.W_EE is (3, 64) here but (500, 64) in the network")


# ---------------------------------------------------------------- unreadable data


def _write_idx(path, array, magic):
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
                     + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_run(tmp_path):
    """A run on a folder of MNIST IDX files (64 random training and 20 test images), stopped after epoch 1."""
    data = tmp_path / "idx"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 20)):
        _write_idx(data / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(data / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    graph = load_graph(SPECS / "mlp.ei", {"depth": "2"})
    cfg = TrainConfig(data="mnist", data_dir=str(data), epochs=2, batch_size=32, threads=1, hist_epochs=[])
    trainer = Trainer(graph, cfg, tmp_path / "run", log=lambda line: None, on_epoch_end=_stop_after_first_epoch)
    trainer.start()
    with pytest.raises(Interrupted):
        trainer.fit()
    return tmp_path / "run", data


def test_unreadable_data_folder_on_resume_is_one_line_and_changes_nothing(mnist_run):
    run, data = mnist_run
    images = data / "train-images-idx3-ubyte"
    _truncate(images)
    before = _snapshot(run)
    code, output = cli("train", "--resume", run)
    assert code == 2, output
    assert _error_line(output).startswith(f"error: {images}: IDX header promises shape (64, 28, 28)")
    shutil.rmtree(data)
    code, output = cli("train", "--resume", run)
    assert code == 2, output
    assert _error_line(output).startswith(f"error: mnist: data_dir {data} is not a folder")
    assert _snapshot(run) == before


def test_missing_data_folder_on_a_fresh_run_creates_nothing(tmp_path):
    code, output = cli("train", SPECS / "mlp.ei", "--set", "depth=2", "--data", "mnist", "--data-dir",
                       tmp_path / "nowhere", "--out", tmp_path / "run")
    assert code == 2, output
    assert _error_line(output).startswith(f"error: mnist: data_dir {tmp_path / 'nowhere'} is not a folder")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- a full disk


def _disk_full_on(name, nth, monkeypatch):
    """Make the nth write whose temporary file belongs to `name` fail as a full disk would, half-way."""
    calls, real = [], files._write_bytes

    def write(f, data):
        if f".{name}.tmp-" in f.name:
            calls.append(1)
            if len(calls) == nth:
                f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, data)

    monkeypatch.setattr(files, "_write_bytes", write)


def test_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _disk_full_on("last.safetensors", 2, monkeypatch)      # epoch 2's checkpoint
    code, output = cli("train", SPECS / "mlp.ei", *TRAIN_ARGS, "--epochs", "2", "--out", run)
    assert code == 2, output
    assert _error_line(output) == (f"error: cannot write {run / LAST}: No space left on device; "
                                   "the previous last.safetensors is unchanged")
    kept, best = ckpt.load(run / LAST), ckpt.load(run / "checkpoints" / "best.safetensors")
    assert kept.state["epoch"] == 1
    assert all(torch.equal(kept.weights[k], best.weights[k]) for k in best.weights)   # best is epoch 1's
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.safetensors", "last.safetensors"]
    monkeypatch.undo()
    code, output = cli("train", "--resume", run)
    assert code == 0 and "resuming at epoch 2" in output, output


def test_full_disk_while_appending_metrics(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def no_space(path, mode="r", *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics, "open", no_space, raising=False)
    # The circuit monitor appends first (batch 1); off here, so the epoch's metrics line is the first write.
    config = tmp_path / "no_monitor.toml"
    config.write_text("circuit_every = 0\n")
    code, output = cli("train", SPECS / "mlp.ei", *TRAIN_ARGS, "--epochs", "1", "--config", config, "--out", run)
    assert code == 2, output
    assert _error_line(output) == (f"error: cannot write {run / 'metrics.jsonl'}: No space left on device; "
                                   "the previous metrics.jsonl is unchanged")
    assert (run / "metrics.jsonl").read_text() == "" and not (run / LAST).exists()
    assert not (run / "circuit.jsonl").exists()


def test_full_disk_while_logging_the_circuit_stops_at_the_first_batch(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def no_space(path, mode="r", *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics, "open", no_space, raising=False)
    code, output = cli("train", SPECS / "mlp.ei", *TRAIN_ARGS, "--epochs", "1", "--out", run)
    assert code == 2, output
    assert _error_line(output).startswith(f"error: cannot write {run / 'circuit.jsonl'}: No space left on device")
    assert not (run / LAST).exists()


# ---------------------------------------------------------------- non-finite currents


@pytest.mark.parametrize("parameter, first", [
    ("classifier_1.O.W_EI", "the loss is nan at epoch 1, batch 3; the first non-finite tensor is I_sub of layer "
                            "'classifier_1.O' (computing 'classifier_1.O:I_int')"),
    ("layer_1.E.W_EI", "are non-finite at epoch 1, batch 3; the first non-finite tensor is I_sub of layer "
                       "'layer_1.E' (computing 'layer_1.E:I_int')"),
    ("layer_1.I.g_I", "are non-finite at epoch 1, batch 3; the first non-finite tensor is I_div of layer "
                      "'layer_1.E' (computing 'layer_1.E:I_int')"),
    ("layer_1.E.g_E", "are non-finite at epoch 1, batch 3; the first non-finite tensor is I_int of layer "
                      "'layer_1.E' (tensor 'layer_1.E:I_int')"),
])
def test_nonfinite_names_the_current_where_it_first_appears(tmp_path, parameter, first):
    # A hidden layer's spikes stay finite (a NaN membrane never fires), so its NaN shows in the
    # gradients, checked before the update; the readout's reaches the loss.
    def poison(trainer):
        if (trainer.epoch, trainer.batch) == (0, 2):
            trainer.net.tensor(parameter).data.view(-1)[0] = math.inf

    trainer = tiny_trainer(tmp_path / "run", {"epochs": 1, "hist_epochs": []}, on_batch_end=poison)
    trainer.start()
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    message = str(err.value)
    assert first in message and f"non-finite parameters: {parameter};" in message, message
    assert err.value.exit_code == 4 and "\n" not in message


# ---------------------------------------------------------------- a crash between the two checkpoint writes

class _Killed(BaseException):
    """Stands for kill -9: nothing of the trainer's error handling runs."""


def _kill_before_save(n, monkeypatch):
    calls, real = [], ckpt.save

    def save(path, *args, **kwargs):
        calls.append(os.path.basename(path))
        if len(calls) == n:
            raise _Killed
        real(path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save", save)
    return calls


def _claimed_best(run):
    return ckpt.header(run / LAST)["state"]["best"]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_a_crash_before_any_checkpoint_write_leaves_claims_and_files_agreeing(tmp_path, monkeypatch, n):
    """Issue 23.2: last.safetensors records a new best before best.safetensors is written; a kill
    between the two used to leave `eval --best` on the previous best weights. Two epochs, each
    improving, make four writes (last, best, last, best); the run is killed before the nth."""
    from eidsl.train.evaluate import evaluate_checkpoint
    run = tmp_path / "run"
    calls = _kill_before_save(n, monkeypatch)
    trainer = tiny_trainer(run, {"epochs": 2})
    trainer.start()
    with pytest.raises(_Killed):
        trainer.fit()
    assert calls == ["last.safetensors", "best.safetensors", "last.safetensors", "best.safetensors"][:n]
    monkeypatch.undo()
    if n == 1:      # nothing saved, nothing claimed
        assert not (run / LAST).exists() and not (run / "checkpoints" / "best.safetensors").exists()
        return
    claim = _claimed_best(run)
    assert claim["epoch"] == {2: 1, 3: 1, 4: 2}[n]
    assert evaluate_checkpoint(run, best=True)["accuracy"] == claim["accuracy"]

    resumed = tiny_trainer(run, {"epochs": 2})
    resumed.resume()
    summary = resumed.fit()
    assert summary["best_epoch"] == 2 and _claimed_best(run)["epoch"] == 2
    assert ckpt.best_weights(run / "checkpoints") == (run / "checkpoints" / "best.safetensors", False)
    result = evaluate_checkpoint(run, best=True)
    assert result["accuracy"] == summary["best_accuracy"] and result["notes"] == []


# ---------------------------------------------------------------- damaged weights inside the data bytes

def _overwrite_tensor(path, prefix, value):
    """Write `value` over every float32 of the first tensor whose name starts with `prefix`, in place."""
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    name = next(k for k in sorted(head) if k.startswith(prefix) and head[k]["dtype"] == "F32")
    start, end = (8 + n + o for o in head[name]["data_offsets"])
    data[start:end] = struct.pack("<f", value) * ((end - start) // 4)
    path.write_bytes(bytes(data))
    return name


def _without_checksums(path):
    """The same file as eidsl wrote it before checkpoints carried checksums."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    save_file(tensors, str(path), {k: v for k, v in metadata.items() if not k.endswith("_sha256")})


@pytest.mark.parametrize("value", [float("nan"), 1e30, 0.0])
def test_weights_damaged_inside_the_data_are_refused(run_copy, value):
    """Issue 23.8: weights overwritten inside the data bytes used to evaluate with exit 0."""
    best = run_copy / "checkpoints" / "best.safetensors"
    for path in (run_copy / LAST, best):
        _overwrite_tensor(path, "layer", value)
    before = _snapshot(run_copy)
    for args, path in ((("eval", run_copy), run_copy / LAST), (("eval", run_copy, "--best"), best),
                       (("train", "--resume", run_copy), run_copy / LAST)):
        code, output = cli(*args)
        assert code == 2, output
        assert _error_line(output) == (f"error: {path}: the weights do not match the checksum recorded when the file "
                                       "was written (the file was damaged or edited since); refusing it")
    assert _snapshot(run_copy) == before


def test_damaged_training_state_is_refused_on_resume(run_copy):
    _overwrite_tensor(run_copy / LAST, "train_state/", 1e30)
    code, output = cli("train", "--resume", run_copy)
    assert code == 2 and "the training state does not match the checksum" in _error_line(output), output
    assert cli("eval", run_copy)[0] == 0        # the weights themselves are intact


def test_checkpoints_from_before_checksums_load_with_a_note_and_finite_weights(run_copy):
    _without_checksums(run_copy / LAST)
    code, output = cli("eval", run_copy)
    assert code == 0, output
    assert "was written before checkpoints carried a checksum" in output and "test accuracy: " in output
    name = _overwrite_tensor(run_copy / LAST, "layer", float("nan"))
    code, output = cli("eval", run_copy)
    assert code == 2 and f"weight {name} holds inf or NaN" in _error_line(output), output


def test_best_weights_names_the_file_that_holds_the_claimed_best(tmp_path):
    w = {"w": torch.ones(2)}

    def files(last_at, best_epoch):
        ckpt.save(tmp_path / "last.safetensors", w, {"best": {"epoch": 1, "accuracy": 0.5}},
                  {"epoch": last_at[0], "batch": last_at[1]})
        (tmp_path / "best.safetensors").unlink(missing_ok=True)
        if best_epoch is not None:
            ckpt.save(tmp_path / "best.safetensors", w, None, {"epoch": best_epoch, "batch": 0})
        return ckpt.best_weights(tmp_path)

    assert files((3, 0), 1) == (tmp_path / "best.safetensors", False)
    assert files((1, 0), None) == (tmp_path / "last.safetensors", True)     # killed before the first best
    assert files((1, 0), 0) == (tmp_path / "last.safetensors", True)
    for last_at, best_epoch in (((3, 0), 2), ((1, 5), None)):
        with pytest.raises(ckpt.CheckpointError, match="records its best as epoch 1 \\(50.00%\\) and no longer"):
            files(last_at, best_epoch)
