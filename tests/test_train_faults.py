"""Trainer faults at the process level: SIGKILL in a checkpoint write, damaged or foreign
checkpoints, unreadable data, a full disk, non-finite currents. Each error is one line
saying what and where, exits non-zero, and leaves every file saved before untouched."""
import errno
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
from eidsl import checkpoint as ckpt
from eidsl import metrics
from eidsl.api import build_graph, load_graph
from eidsl.config import TrainConfig
from eidsl.train import Interrupted, NonFiniteError, Trainer
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
from eidsl import checkpoint as ckpt
marker, writes, real = sys.argv[1], [], ckpt._write_bytes
def half_then_hang(f, data):
    if ".last.safetensors.tmp-" in f.name:
        writes.append(f.name)
        if len(writes) == 2:
            f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
            open(marker, "w").close()
            time.sleep(600)
    real(f, data)
ckpt._write_bytes = half_then_hang
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
    calls, real = [], ckpt._write_bytes

    def write(f, data):
        if f".{name}.tmp-" in f.name:
            calls.append(1)
            if len(calls) == nth:
                f.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, data)

    monkeypatch.setattr(ckpt, "_write_bytes", write)


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
