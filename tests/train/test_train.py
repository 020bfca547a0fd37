"""Training: config, schedule, a real short run, resume bit for bit, atomic checkpoints, Ctrl-C,
non-finite detection, eval and plot. All runs use sklearn's digits and a one-hidden-layer E-I MLP."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import ROOT, SPECS
from eidsl import files
from eidsl.train import checkpoint as ckpt
from eidsl.api import load_graph
from eidsl.cli import app
from eidsl.train.config import ConfigError, TrainConfig, read_toml, resolve
from eidsl.train.trainer import Interrupted, NonFiniteError, Trainer, make_scheduler

TINY = {"depth": "2", "input": "[1,8,8]"}
TINY_ARGS = ["--set", "depth=2", "--set", "input=[1,8,8]"]
# One thread: these matmuls are too small to gain from two, and a shared CPU makes two thrash.
CFG = dict(data="digits", epochs=3, batch_size=128, lr=0.01, warmup_epochs=1, seed=7, threads=1)


def tiny_trainer(run, cfg=None, **kwargs):
    graph = load_graph(SPECS / "mlp.ei", TINY)
    return Trainer(graph, TrainConfig(**{**CFG, **(cfg or {})}), run, spec=str(SPECS / "mlp.ei"), sets=TINY,
                   log=lambda line: None, **kwargs)


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted 3-epoch run through the CLI: the reference for resume, eval and plot."""
    run = tmp_path_factory.mktemp("full") / "run"
    # The same settings as CFG (tiny_trainer), whatever the spec's train block says.
    toml = run.parent / "cfg.toml"
    toml.write_text(f"[train]\nwarmup_epochs = {CFG['warmup_epochs']}\nshift = 0\n")
    code, output = cli("train", SPECS / "mlp.ei", *TINY_ARGS, "--data", "digits", "--epochs", 3, "--seed", 7,
                       "--batch-size", 128, "--lr", 0.01, "--threads", 1, "--config", toml, "--out", run)
    assert code == 0, output
    return run, output


# ---------------------------------------------------------------- configuration


def test_config_layers_later_sources_win(tmp_path):
    toml = tmp_path / "t.toml"
    toml.write_text("[train]\nlr = 0.05\nepochs = 7\n")
    cfg = resolve([("spec", {"lr": 0.01, "epochs": 3, "batch_size": 64}), ("t.toml", read_toml(toml)),
                   ("--epochs", {"epochs": 9})])
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.init_lr) == (0.05, 9, 64, 1e-7)


@pytest.mark.parametrize("layers, message", [
    ([("--lr", {"lr": -1.0})], r"^training setting 'lr' = -1\.0 \(from --lr\): Input should be greater than 0$"),
    ([("x.toml", {"epochs": "many"})], r"'epochs' = 'many' \(from x\.toml\): Input should be a valid integer"),
    ([("the train block of s.ei", {"epoch": 3})],
     r"unknown training setting 'epoch' in the train block of s\.ei; did you mean 'epochs'\?"),
    ([("t.toml", {"T": 8})], r"'T' in t\.toml is not a training setting; T is a network parameter: use --set T=N"),
    ([("--device", {"device": "tpu"})], r"'device' = 'tpu' \(from --device\): Input should be 'cpu' or 'cuda'"),
    ([("spec", {"init_lr": 0.5, "lr": 0.1, "warmup_epochs": 2})], r"'init_lr' = 0\.5 .*must start below lr"),
])
def test_config_errors_name_the_field_and_source(layers, message):
    with pytest.raises(ConfigError) as err:
        resolve(layers)
    assert "\n" not in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)


def test_cli_reports_a_bad_option_in_one_line(tmp_path):
    code, output = cli("train", SPECS / "mlp.ei", "--lr", "0", "--out", tmp_path / "r")
    assert code == 2
    assert "training setting 'lr' = 0.0 (from --lr): Input should be greater than 0" in output
    assert "Traceback" not in output and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- short runs and small images (budget.py)


def test_an_inherited_warmup_keeps_its_share_of_a_shorter_run():
    spec = ("the train block of mlp.ei", {"epochs": 10, "warmup_epochs": 2, "shift": 2})
    cfg = resolve([spec, ("--epochs", {"epochs": 1})])
    assert cfg.warmup_epochs == pytest.approx(0.2)
    assert cfg._notes and "keeps its share (20%)" in cfg._notes[0]
    # A TOML file's warm-up, then --epochs: its share of the spec's 10 epochs.
    cfg = resolve([spec, ("t.toml", {"warmup_epochs": 5}), ("--epochs", {"epochs": 4})])
    assert cfg.warmup_epochs == pytest.approx(2.0)
    # Shorter than the run: nothing changes, nothing is said.
    cfg = resolve([spec, ("--epochs", {"epochs": 3})])
    assert cfg.warmup_epochs == 2 and cfg._notes == []


@pytest.mark.parametrize("layers", [
    [("t.toml", {"epochs": 2, "warmup_epochs": 2})],                          # asked for together
    [("--epochs", {"epochs": 3}), ("t.toml", {"warmup_epochs": 5})],          # asked for after the budget
    [("t.toml", {"warmup_epochs": 25})],                                      # longer than the default 20
])
def test_a_warmup_asked_for_as_long_as_the_run_is_refused(layers):
    with pytest.raises(ConfigError, match="'warmup_epochs' = .* not shorter than the run"):
        resolve(layers)


def test_an_inherited_shift_keeps_its_share_of_a_smaller_image():
    from eidsl.train.evaluate import load_data
    graph = load_graph(SPECS / "mlp.ei", TINY)
    spec = ("the train block of mlp.ei", {"data": "mnist5k", "shift": 2})
    cfg = resolve([spec, ("--data", {"data": "digits"})])
    train, _, _ = load_data(graph, cfg)
    # 2 pixels of a 28x28 digit are 0 of an 8x8 one: no shift step, and the run says why.
    assert cfg.shift == 0 and "RandomShift" not in repr(train.pipeline.steps)
    assert any("shift 0 pixels instead of 2" in n and "8x8" in n for n in cfg._notes)
    # Asked for on digits itself: a quarter of the image is refused, 1 pixel is kept.
    with pytest.raises(ConfigError, match=r"'shift' = 2 \(from t.toml\): a digits image is 8x8 pixels.*at most 1"):
        load_data(graph, resolve([("t.toml", {"data": "digits", "shift": 2})]))
    cfg = resolve([("t.toml", {"data": "digits", "shift": 1})])
    train, _, _ = load_data(graph, cfg)
    assert cfg.shift == 1 and "RandomShift(max_shift=1)" in repr(train.pipeline.steps) and cfg._notes == []


def test_a_short_run_on_small_images_says_what_it_adapted(tmp_path):
    run = tmp_path / "run"
    code, output = cli("train", SPECS / "mlp.ei", *TINY_ARGS, "--data", "digits", "--epochs", 1,
                       "--threads", 1, "--out", run)
    assert code == 0, output
    text = " ".join(output.split())
    assert "note: warm-up 0.067 epochs instead of 2" in text and "note: shift 0 pixels instead of 2" in text
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["warmup_epochs"] == pytest.approx(0.067) and saved["train"]["shift"] == 0
    assert len(saved["adapted"]) == 2


# ---------------------------------------------------------------- schedule


def test_schedule_is_linear_warmup_then_per_iteration_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    cfg = TrainConfig(lr=0.1, init_lr=1e-3, warmup_epochs=2, epochs=5)
    iters, warm, total = 4, 8, 20
    sched = make_scheduler(opt, cfg, iters)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [1e-3 + (0.1 - 1e-3) * i / warm for i in range(warm)]
    expected += [0.1 * 0.5 * (1 + math.cos(math.pi * j / (total - warm))) for j in range(total - warm)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)   # cosine reaches 0 after the last step


def test_schedule_without_warmup_is_pure_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched = make_scheduler(opt, TrainConfig(lr=0.01, warmup_epochs=0, epochs=2), 3)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * j / 6)) for j in range(6)], rel=1e-9)


# ---------------------------------------------------------------- a real run


def test_short_run_learns_and_writes_its_folder(full_run):
    run, output = full_run
    lines = output.strip().splitlines()
    match = re.fullmatch(r"test accuracy: (\d+\.\d\d)% \(best (\d+\.\d\d)% at epoch (\d)\)", lines[-1])
    assert match, lines[-1]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert float(match.group(1)) == pytest.approx(100 * records[-1]["test_accuracy"], abs=0.006)
    best = max(records, key=lambda r: r["test_accuracy"])
    assert (float(match.group(2)), int(match.group(3))) == (pytest.approx(100 * best["test_accuracy"], abs=0.006),
                                                            best["epoch"])
    assert records[-1]["test_accuracy"] > 0.5           # chance is 0.1
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert sum(1 for line in lines if line.startswith("epoch ")) == 3
    rate = records[-1]["firing_rates"]["layer_1.E"]
    assert 0.01 < rate < 0.9 and records[-1]["firing_rate"] == pytest.approx(rate)
    config = json.loads((run / "config.json").read_text())
    assert config["sets"] == TINY and config["train"]["epochs"] == 3 and config["train"]["data"] == "digits"
    assert config["network"]["params"]["depth"] == 2 and config["spec"].endswith("mlp.ei")
    assert sorted(p.name for p in (run / "hist").iterdir()) == ["epoch_0000.npz", "epoch_0001.npz", "epoch_0003.npz"]


def test_histograms_hold_the_paper_quantities(full_run):
    run, _ = full_run
    with np.load(run / "hist" / "epoch_0003.npz") as h:
        keys = set(h.files)
        counts = h["layer_1.E|I_div|counts"]
    for q in ("I_EE", "I_sub", "I_div", "I_int", "W_EE", "W_IE", "W_EI", "g_I"):
        assert f"layer_1.E|{q}|counts" in keys and f"layer_1.E|{q}|edges" in keys
    assert counts.sum() == 256 * 4 * 500       # 256 test images x T = 4 steps x 500 neurons
    assert "classifier_1.O|I_div|counts" not in keys and "classifier_1.O|I_sub|counts" in keys


# ---------------------------------------------------------------- resume


def _weights(run):
    return load_file(str(run / "checkpoints" / "last.safetensors"))


def _same_tensors(a, b):
    got = {k: v for k, v in a.items() if not k.startswith("train_state/")}
    want = {k: v for k, v in b.items() if not k.startswith("train_state/")}
    assert got.keys() == want.keys()
    return all(torch.equal(got[k], want[k]) for k in got)


def _strip_seconds(run):
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_an_epoch_is_bit_exact(full_run, tmp_path):
    reference, _ = full_run
    run = tmp_path / "run"

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt

    trainer = tiny_trainer(run, on_epoch_end=stop_after_first_epoch)
    trainer.start()
    with pytest.raises(Interrupted) as err:
        trainer.fit()
    assert err.value.exit_code == 130
    assert f"resume with: eidsl train --resume {run}" in str(err.value)
    assert not _same_tensors(_weights(run), _weights(reference))
    code, output = cli("train", "--resume", run)
    assert code == 0, output
    assert "resuming at epoch 2" in output
    assert _same_tensors(_weights(run), _weights(reference))
    assert _strip_seconds(run) == _strip_seconds(reference)


def test_ctrl_c_mid_epoch_saves_that_batch_and_resumes_bit_exact(full_run, tmp_path):
    reference, _ = full_run
    run = tmp_path / "run"

    def ctrl_c(trainer):
        if (trainer.epoch, trainer.batch) == (1, 4):
            raise KeyboardInterrupt

    trainer = tiny_trainer(run, on_batch_end=ctrl_c)
    trainer.start()
    with pytest.raises(Interrupted, match="saved .*last.safetensors at epoch 2, batch 4"):
        trainer.fit()
    saved = ckpt.load(run / "checkpoints" / "last.safetensors")
    assert (saved.state["epoch"], saved.state["batch"]) == (1, 4)
    resumed = tiny_trainer(run)
    resumed.resume()
    assert (resumed.epoch, resumed.batch) == (1, 4)
    resumed.fit()
    assert _same_tensors(_weights(run), _weights(reference))
    assert _strip_seconds(run) == _strip_seconds(reference)


def test_resume_refuses_new_settings_and_out_refuses_an_existing_run(full_run):
    run, _ = full_run
    code, output = cli("train", "--resume", run, "--lr", "0.1")
    assert code == 2 and "--resume continues" in output and "drop --lr" in output
    before = (run / "metrics.jsonl").read_text()
    code, output = cli("train", SPECS / "mlp.ei", *TINY_ARGS, "--data", "digits", "--out", run)
    assert code == 2 and "already holds a run" in output and f"eidsl train --resume {run}" in output
    assert (run / "metrics.jsonl").read_text() == before


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_saves_and_exits_130(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "eidsl.cli", "train", str(SPECS / "mlp.ei"), *TINY_ARGS, "--data", "digits",
           "--epochs", "200", "--threads", "1", "--out", str(run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stdout:
        if line.startswith("epoch "):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(60) == 130, rest
    assert f"resume with: eidsl train --resume {run}" in rest
    state = ckpt.load(run / "checkpoints" / "last.safetensors").state
    assert 1 <= state["epoch"] < 200


# ---------------------------------------------------------------- atomic checkpoints


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    ckpt.save(path, {"w": torch.arange(4.0)}, {"epoch": 1}, {"epoch": 1})

    def torn(f, data):
        f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(files, "_write_bytes", torn)
    with pytest.raises(OSError):
        ckpt.save(path, {"w": torch.zeros(4)}, {"epoch": 2}, {"epoch": 2})
    back = ckpt.load(path)
    assert torch.equal(back.weights["w"], torch.arange(4.0)) and back.state["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_sigkill_during_save_leaves_previous_checkpoint(tmp_path):
    path, ready = tmp_path / "last.safetensors", tmp_path / "half-written"
    script = f"""
import time, torch
from eidsl import files
from eidsl.train import checkpoint as ckpt
path = {str(path)!r}
ckpt.save(path, {{"w": torch.ones(1000)}}, {{"epoch": 1}})
def slow(f, data):
    f.write(data[: len(data) // 2]); f.flush()
    open({str(ready)!r}, "w").close()
    time.sleep(60)
files._write_bytes = slow
ckpt.save(path, {{"w": torch.zeros(1000)}}, {{"epoch": 2}})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            import time
            time.sleep(0.05)
        assert ready.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    back = ckpt.load(path)
    assert back.state["epoch"] == 1 and torch.equal(back.weights["w"], torch.ones(1000))
    assert any(p.name.startswith(".last.safetensors.tmp-") for p in tmp_path.iterdir())  # the torn temp file


def test_state_tree_round_trips_rng_and_optimizer_state(tmp_path):
    import random
    rng = ckpt.capture_rng(torch.Generator().manual_seed(3))
    state = {"rng": rng, "opt": {"state": {0: {"momentum_buffer": torch.randn(3)}}, "param_groups": [{"params": [0]}]}}
    ckpt.save(tmp_path / "c.safetensors", {}, state)
    back = ckpt.load(tmp_path / "c.safetensors").state
    assert back["rng"]["python"] == random.getstate()
    assert torch.equal(back["rng"]["torch"], rng["torch"]) and torch.equal(back["rng"]["data"], rng["data"])
    assert back["rng"]["numpy"][0] == "MT19937" and np.array_equal(back["rng"]["numpy"][1], rng["numpy"][1])
    assert back["rng"]["numpy"][1].dtype == rng["numpy"][1].dtype
    assert list(back["opt"]["state"]) == [0]
    assert torch.equal(back["opt"]["state"][0]["momentum_buffer"], state["opt"]["state"][0]["momentum_buffer"])


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ckpt.CheckpointError, match="unreadable checkpoint"):
        ckpt.load(bad)


# ---------------------------------------------------------------- non-finite


def test_nonfinite_loss_names_the_first_layer_and_keeps_the_checkpoint(tmp_path):
    run = tmp_path / "run"

    def poison(trainer):
        if (trainer.epoch, trainer.batch) == (1, 2):
            trainer.net.tensor("classifier_1.O.W_EE").data[3, 5] = math.inf

    trainer = tiny_trainer(run, on_batch_end=poison)
    trainer.start()
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    message = str(err.value)
    assert err.value.exit_code == 4
    assert "the loss is nan at epoch 2, batch 3" in message
    assert "first non-finite tensor is I_EE of layer 'classifier_1.O' (tensor 'classifier_1.O<-layer_1.E')" in message
    assert "non-finite parameters: classifier_1.O.W_EE" in message
    assert "last good checkpoint" in message and "(epoch 1)" in message
    saved = ckpt.load(run / "checkpoints" / "last.safetensors")
    assert saved.state["epoch"] == 1 and all(torch.isfinite(t).all() for t in saved.weights.values())


def test_nonfinite_hidden_weights_stop_before_the_update_spreads_them(tmp_path):
    # The spikes of layer_1 stay finite, so the loss does too; the gradients do not, and the
    # update that would spread the NaN to every weight of the layer is never made.
    def poison(trainer):
        if (trainer.epoch, trainer.batch) == (0, 3):
            trainer.net.tensor("layer_1.E.W_EE").data[0, 0] = math.inf

    trainer = tiny_trainer(tmp_path / "run", on_batch_end=poison)
    trainer.start()
    with pytest.raises(NonFiniteError, match=r"the gradients of layer_1\.E\.W_EE, .* are non-finite at "
                                             r"epoch 1, batch 4; the first non-finite tensor is I_EE of layer "
                                             r"'layer_1\.E' \(tensor 'layer_1\.E<-flatten_1'\); "
                                             r"non-finite parameters: layer_1\.E\.W_EE;"):
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoints" / "last.safetensors").exists()


# ---------------------------------------------------------------- eval and plot


def test_eval_reports_checkpoint_loss_accuracy_and_rates(full_run):
    run, _ = full_run
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for target, extra in ((run, ()), (run / "checkpoints" / "last.safetensors", ("--data", "digits"))):
        code, output = cli("eval", target, "--threads", 1, *extra)
        assert code == 0, output
        assert f"checkpoint: {run / 'checkpoints' / 'last.safetensors'} (network mlp" in output
        assert "epoch 3)" in output and "data: digits test split" in output
        assert f"test accuracy: {100 * final['test_accuracy']:.2f}%" in output
        loss = float(re.search(r"test loss: ([0-9.]+)", output).group(1))
        assert loss == pytest.approx(final["test_loss"], abs=1e-4)
        rate = float(re.search(r"layer_1\.E\s+([0-9.]+)", output).group(1))
        assert 0 < rate < 1
    code, output = cli("eval", run, "--json")
    got = json.loads(output)
    assert got["accuracy"] == pytest.approx(final["test_accuracy"]) and set(got["rates"]) >= {"layer_1.E"}


def test_eval_on_data_that_does_not_fit_is_a_clear_error(full_run):
    run, _ = full_run
    code, output = cli("eval", run, "--data", "mnist5k")
    assert code == 2 and "Traceback" not in output
    # eval takes no --set: the fix it names is another data set, or training a network for this one.
    assert "eidsl train SPEC --set input=[1,28,28]" in " ".join(output.split())
    assert "build it for this data with --set" not in output


def test_fine_tuning_starts_from_the_checkpoints_weights(full_run, tmp_path):
    run, _ = full_run
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_accuracy"]
    toml = tmp_path / "still.toml"
    # A learning rate that cannot move the weights: the first epoch must score what the source scored.
    toml.write_text("[train]\nwarmup_epochs = 0\nshift = 0\nweight_decay = 0\n")
    tuned = tmp_path / "tuned"
    code, output = cli("train", "--weights", run, "--data", "digits", "--epochs", 1, "--lr", 1e-12,
                       "--threads", 1, "--config", toml, "--out", tuned)
    assert code == 0, output
    first = json.loads((tuned / "metrics.jsonl").read_text().splitlines()[0])["test_accuracy"]
    assert first == pytest.approx(final) and first > 0.5
    saved = json.loads((tuned / "config.json").read_text())
    assert saved["weights"] == str(run) and "mlp.ei" in saved["spec_text"]["files"]
    # Weights of another network (depth 2 there, 4 here) are refused before a run folder exists.
    code, output = cli("train", SPECS / "mlp.ei", "--set", "input=[1,8,8]", "--weights", run, "--data", "digits",
                       "--out", tmp_path / "other")
    assert code == 2 and "depth=2 there, 4 here" in " ".join(output.split()), output
    assert not (tmp_path / "other").exists()


def test_plot_writes_pngs(full_run, tmp_path):
    run, _ = full_run
    code, output = cli("plot", run, "--out", tmp_path)
    assert code == 0, output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["balance_over_training.png", "curves.png", "firing_rates.png", "hist_classifier_1.O.png",
                     "hist_layer_1.E.png", "raster.png"]
    for p in tmp_path.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_raster_shows_the_spikes_of_the_runs_network(full_run, tmp_path, monkeypatch):
    """The raster's points are exactly the spikes of the first neurons of the last checkpoint's
    network on the first test sample, and I_int's histogram marks theta."""
    from eidsl.tools import plot
    from eidsl.train.evaluate import load_network
    run, _ = full_run
    drawn = []
    real = plot._save
    monkeypatch.setattr(plot, "_save", lambda fig, path: drawn.append(fig) or real(fig, path))
    assert plot.raster(run, tmp_path / "r.png") == tmp_path / "r.png"
    (ax,) = drawn[0].axes
    points = ax.collections[0].get_offsets()
    net, meta = load_network(run)
    from eidsl.train.config import resolve
    from eidsl.train.evaluate import load_data
    _, test, _ = load_data(net.graph, resolve([("c", {"data": meta["data"]})]), trained=True)
    with torch.no_grad():
        spikes = net.eval().run(test[0][0].unsqueeze(0), keep=True)["layer_1.E"][:, :plot.RASTER_NEURONS]
    assert len(points) == int(spikes.sum()) > 0
    assert plot._thresholds(run) == {"layer_1.E": 1.0}


# ---------------------------------------------------------------- what to train


def _fake_builds(tmp_path):
    graph = load_graph(SPECS / "mlp.ei", TINY)
    info = types.SimpleNamespace(graph=graph, spec=SPECS / "mlp.ei", sets=TINY, name="mlp")
    module = types.ModuleType("eidsl.interop.builds")
    module.latest_build = lambda root="build": tmp_path / "build" / "b1"
    module.load_build = lambda path: info if path == tmp_path / "build" / "b1" else None
    return module


def test_training_source_from_the_builds_module(tmp_path, monkeypatch):
    from eidsl.cli.train import resolve_source
    monkeypatch.setitem(sys.modules, "eidsl.interop.builds", _fake_builds(tmp_path))
    graph, spec, sets = resolve_source(None, {})
    assert graph.params["depth"] == 2 and spec.endswith("mlp.ei") and sets == TINY
    graph, _, sets = resolve_source(None, {"T": "2"})
    assert graph.params["T"] == 2 and graph.params["input"] == [1, 8, 8] and sets == {**TINY, "T": "2"}


def test_training_source_falls_back_to_build_latest(tmp_path, monkeypatch):
    from eidsl.cli.train import resolve_source
    from eidsl.errors import EidslError
    monkeypatch.setitem(sys.modules, "eidsl.interop.builds", None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EidslError, match="no build to train: run `eidsl compile SPEC` first"):
        resolve_source(None, {})
    (tmp_path / "build" / "b1").mkdir(parents=True)
    (tmp_path / "build" / "b1" / "spec.json").write_text(json.dumps({"spec": str(SPECS / "mlp.ei"), "sets": TINY}))
    (tmp_path / "build" / "LATEST").write_text("build/b1\n")
    graph, _, sets = resolve_source(None, {"depth": "4"})
    assert graph.params["depth"] == 4 and graph.params["input"] == [1, 8, 8]


def test_batchnorm_family_trains_with_the_same_loop(tmp_path):
    graph = load_graph(SPECS / "mlp.ei", {**TINY, "family": '"bn"'})
    assert graph.train["lr"] == 0.1
    trainer = Trainer(graph, TrainConfig(**{**CFG, "epochs": 2, "lr": graph.train["lr"]}), tmp_path / "run",
                      log=lambda line: None)
    assert not trainer.needs_init      # no data-dependent initialiser in a BN network
    trainer.start()
    result = trainer.fit()
    assert result["accuracy"] > 0.5
    bn = trainer.net.tensor("layer_1.E.bn")
    assert bn.num_batches_tracked.item() == 2 * trainer.iters_per_epoch   # histograms did not touch it


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)      # as if it were not installed
    code, output = cli("train", SPECS / "mlp.ei", *TINY_ARGS, "--data", "digits", "--epochs", "1",
                       "--out", tmp_path / "r")
    assert code == 2 and "TensorBoard event files need the tensorboard package" in output
    assert "--no-tensorboard" in output


def test_default_run_writes_tensorboard_events_that_tensorboard_reads(tmp_path):
    """Scalars equal to metrics.jsonl (the record), rates per population, histograms of currents and weights."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "r"
    code, output = cli("train", SPECS / "mlp.ei", *TINY_ARGS, "--data", "digits", "--epochs", "2",
                       "--batch-size", "256", "--threads", "1", "--out", run)
    assert code == 0, output
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for key, tag in (("train_loss", "train/loss"), ("test_accuracy", "test/accuracy"), ("lr", "lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]
        assert [e.value for e in events] == pytest.approx([r[key] for r in records], rel=1e-6)
    for group in ("firing_rates", "test_firing_rates"):
        layers = records[-1][group]
        assert layers and all(f"{group}/{name}" in tags["scalars"] for name in layers)
        assert acc.Scalars(f"{group}/layer_1.E")[-1].value == pytest.approx(layers["layer_1.E"], rel=1e-6)
    hists = set(tags["histograms"])
    assert {"I_int/layer_1.E", "I_div/layer_1.E", "W_EE/layer_1.E", "W_EI/layer_1.E"} <= hists
    steps = [e.step for e in acc.Histograms("I_int/layer_1.E")]
    assert steps == sorted(TrainConfig(epochs=2).histogram_epochs())
    assert acc.Histograms("W_EE/layer_1.E")[0].histogram_value.num > 0


def _step_gradient_norms(trainer):
    """The global gradient norm the optimiser sees at each step."""
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for p in trainer.net.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(record)
    return norms


def test_grad_clip_bounds_the_norm_of_every_update(tmp_path):
    free = tiny_trainer(tmp_path / "free", {"epochs": 1})
    free.start()
    free_norms = _step_gradient_norms(free)
    free.fit()
    clipped = tiny_trainer(tmp_path / "clipped", {"epochs": 1, "grad_clip": 0.05})
    clipped.start()
    clipped_norms = _step_gradient_norms(clipped)
    clipped.fit()
    assert len(free_norms) == len(clipped_norms) > 5
    assert max(free_norms) > 0.1                       # the bound below is not met by itself
    assert max(clipped_norms) <= 0.05 * (1 + 1e-5)
    with pytest.raises(ConfigError, match="grad_clip"):
        resolve([("run.toml", {"grad_clip": -1})])


def test_compiled_training_runs_the_same_epoch_as_eager(tmp_path):
    eager = tiny_trainer(tmp_path / "eager", {"epochs": 1})
    eager.start()
    eager.fit()
    compiled = tiny_trainer(tmp_path / "compiled", {"epochs": 1, "compile": True})
    compiled.start()
    compiled.fit()
    assert hasattr(compiled.model, "_orig_mod")
    first = [json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[0]) for run in ("eager", "compiled")]
    # The same data, weights and updates; inductor's rounding may flip a spike near threshold.
    assert first[1]["train_loss"] == pytest.approx(first[0]["train_loss"], rel=0.02)
    assert first[1]["test_accuracy"] == pytest.approx(first[0]["test_accuracy"], abs=0.03)
    assert first[1]["test_accuracy"] > 0.5
