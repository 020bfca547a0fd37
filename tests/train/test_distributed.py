"""Multi-process training: two CPU processes (gloo) under torchrun against one process on the
same global batches (tests/ddp_worker.py), resuming with `eidsl train --resume --nproc 2`,
and the launcher's own checks."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import ddp_worker
from conftest import ROOT, SPECS
from eidsl.train import checkpoint as ckpt
from eidsl.train import distributed
from eidsl.api import load_graph
from eidsl.train.config import ConfigError, TrainConfig
from eidsl.train.trainer import Trainer
from test_train import TINY_ARGS, cli

K = 3                 # updates before the weights are compared
STOP = (1, 3)         # the two-process run stops like Ctrl-C 3 batches into epoch 2
RELATIVE = 1e-6


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest value (0 for two all-zero tensors)."""
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / scale if scale else float((a - b).abs().max())


def _worst(a: dict, b: dict) -> tuple[float, str]:
    assert a.keys() == b.keys()
    return max((_relative(a[k], b[k]), k) for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    ddp_worker.main(str(out), K, -1, -1)      # in this process, trained to the end
    return out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    # Open defect (the xfail below): a gloo worker can abort at exit after it finished
    # ('terminate called without an active exception'). That abort alone is retried once, in a
    # fresh folder; any other failure fails the fixture at once.
    for attempt in range(2):
        out = tmp_path_factory.mktemp("two")
        # --standalone: a rendezvous on a free port, so concurrent test runs do not collide.
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               str(ROOT / "tests" / "ddp_worker.py"), str(out), str(K), *map(str, STOP)],
                              cwd=out, env=_env(), capture_output=True, text=True, timeout=600)
        if done.returncode == 0 or "terminate called without an active exception" not in done.stderr:
            break
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_ei_init_is_identical_on_every_rank_and_equals_one_process(one_process, two_processes):
    two, _ = two_processes
    rank0, rank1 = torch.load(two / "init-2-0.pt"), torch.load(two / "init-2-1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    worst, key = _worst(rank0, torch.load(one_process / "init-1-0.pt"))
    assert worst <= RELATIVE, key


def test_k_updates_leave_identical_weights_equal_to_one_process(one_process, two_processes):
    two, _ = two_processes
    rank0, rank1 = torch.load(two / "step-2-0.pt"), torch.load(two / "step-2-1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not torch.equal(rank0["layer_1.E.W_EE"], torch.load(two / "init-2-0.pt")["layer_1.E.W_EE"])
    worst, key = _worst(rank0, torch.load(one_process / "step-1-0.pt"))
    assert worst <= RELATIVE, key


def test_only_rank_0_writes_and_prints(two_processes):
    two, stdout = two_processes
    # Each rank asked for its own folder, run-<rank>; rank 0's name is the one every rank uses.
    assert sorted(p.name for p in two.iterdir() if p.is_dir()) == ["run-0"]
    assert stdout.count("epoch   1/2") == 1 and stdout.count("interrupted: saved") == 1
    records = [json.loads(line) for line in (two / "run-0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1]
    state = ckpt.load(two / "run-0" / "checkpoints" / "last.safetensors").state
    assert (state["epoch"], state["batch"]) == STOP


@pytest.mark.xfail(strict=False, reason="intermittent: a gloo worker can abort at exit after finishing "
                   "('terminate called without an active exception'); the run itself completes - open defect")
def test_nproc_resume_finishes_the_run_like_one_process(one_process, two_processes, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_processes[0] / "run-0", run)
    done = subprocess.run([sys.executable, "-m", "eidsl", "train", "--resume", str(run), "--nproc", "2"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("resuming at epoch 2, batch 4") == 1 and done.stdout.count("test accuracy:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    reference = one_process / "run-0"
    worst, key = _worst(*[{k: v for k, v in load_file(str(r / "checkpoints" / "last.safetensors")).items()
                           if not k.startswith("train_state/")} for r in (run, reference)])
    assert worst <= RELATIVE, key
    ours, theirs = [[json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
                    for r in (run, reference)]
    assert [r["epoch"] for r in ours] == [1, 2]
    # The test set is split between the ranks and the counts summed: the same accuracy.
    assert [r["test_accuracy"] for r in ours] == [r["test_accuracy"] for r in theirs]
    assert [r["train_loss"] for r in ours] == pytest.approx([r["train_loss"] for r in theirs], rel=1e-6)


# ---------------------------------------------------------------- without processes


def test_shares_cover_a_batch_once_and_differ_by_at_most_one():
    for n in (0, 1, 7, 125, 128):
        for size in (1, 2, 3, 8):
            shares = [range(n)[distributed.World(rank, size).share(n)] for rank in range(size)]
            assert [i for s in shares for i in s] == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_batch_too_small_to_share_is_a_config_error(tmp_path, monkeypatch):
    # Rank 0 of two, without a process group: the check comes before any collective is needed.
    monkeypatch.setattr(distributed, "join", lambda device: distributed.World(0, 2))
    monkeypatch.setattr(distributed.World, "broadcast", lambda self, value: value)
    graph = load_graph(SPECS / "mlp.ei", ddp_worker.SPEC_SETS)
    # digits has 1262 training images: batches of 1261 leave a last batch of one image for two processes.
    with pytest.raises(ConfigError, match=r"^training setting 'batch_size' = 1261: with 2 processes every global "
                                          r"batch needs at least 2 samples, but with 1262 training samples the "
                                          r"last batch of an epoch holds 1; choose another batch size$"):
        Trainer(graph, TrainConfig(data="digits", batch_size=1261), tmp_path / "run")


def test_nproc_settles_bad_settings_before_starting_processes(tmp_path):
    code, output = cli("train", SPECS / "mlp.ei", *TINY_ARGS, "--data", "digits", "--lr", "0", "--nproc", "2",
                       "--out", tmp_path / "r")
    assert code == 2 and output.count("training setting 'lr' = 0.0") == 1 and not (tmp_path / "r").exists()
    code, output = cli("train", SPECS / "mlp.ei", "--nproc", "0")
    assert code == 2 and "--nproc 0: the number of processes must be at least 1" in output


def test_nproc_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    code, output = cli("train", SPECS / "mlp.ei", "--nproc", "2")
    assert code == 2 and "--nproc starts torchrun itself; under torchrun, drop --nproc" in output


def test_the_relaunch_repeats_exactly_what_was_given(monkeypatch):
    seen = {}

    def fake_launch(nproc, args):
        seen["nproc"], seen["args"] = nproc, args
        return 0

    monkeypatch.setattr(distributed, "launch", fake_launch)
    code, output = cli("train", SPECS / "mlp.ei", "--set", "depth=2", "--set", "input=[1,8,8]", "--data", "digits",
                       "--no-compile", "--epochs", "2", "--nproc", "3")
    assert code == 0, output
    assert seen == {"nproc": 3, "args": ["eidsl.cli", "train", str(SPECS / "mlp.ei"), "--data", "digits",
                                         "--epochs", "2", "--set", "depth=2", "--set", "input=[1,8,8]",
                                         "--no-compile"]}


# ---------------------------------------------------------------- hostile: dead launcher, second writer, stalls

import signal
import time
from pathlib import Path

def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_ends_when_its_launcher_is_killed(tmp_path):
    """Issue 23.3: killing `eidsl train --nproc` used to leave its workers training to the end."""
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time\\nfrom eidsl.train import distributed\\n"
              "distributed._die_with_launcher(1)\\nprint(\"ready\", flush=True)\\ntime.sleep(120)'], "
              "stdout=subprocess.PIPE)\n"
              "assert child.stdout.readline().strip() == b'ready'\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(120)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=_env(), stdout=subprocess.PIPE)
    try:
        worker = int(launcher.stdout.readline())
        assert _alive(worker)
        launcher.kill()
        launcher.wait(10)
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its launcher by 30 s"
    finally:
        launcher.kill()


def test_a_second_writer_in_a_run_folder_is_refused(tmp_path):
    from eidsl.errors import EidslError
    from eidsl.train.trainer import RunInUse
    from test_train import tiny_trainer
    run = tmp_path / "run"
    first = tiny_trainer(run, {"epochs": 1})
    first.start()
    first.save()
    second = tiny_trainer(run, {"epochs": 1})
    with pytest.raises(RunInUse, match=rf"{run} is in use by another training process \(pid {os.getpid()}\)"):
        second.resume()
    first.fit()                              # the lock goes with the run that held it
    third = tiny_trainer(run, {"epochs": 1})
    with pytest.raises(EidslError, match="already holds a run"):
        third.start()                        # a refused start lets go of the lock too
    second.resume()
    assert second.epoch == 1


def test_collective_timeout_setting(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "2.5")
    assert distributed.collective_timeout() == 2.5
    for bad in ("0", "-1", "inf", "soon"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(distributed.DistributedError, match="the collective timeout must be a number"):
            distributed.collective_timeout()


def _nproc_train(run, *extra, env=None):
    cmd = [sys.executable, "-m", "eidsl", "train", str(SPECS / "mlp.ei"), *TINY_ARGS, "--data", "digits",
           "--threads", "1", "--nproc", "2", "--out", str(run), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**_env(), **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _workers(pid):
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _wait_for_an_epoch(run, proc, limit=240):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip():
            return
        time.sleep(0.2)
    raise AssertionError(f"no epoch finished (exit {proc.poll()})")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_nproc_launcher_ends_both_workers_and_frees_the_folder(tmp_path):
    run = tmp_path / "run"
    proc = _nproc_train(run, "--epochs", "500")
    try:
        _wait_for_an_epoch(run, proc)
        workers = _workers(proc.pid)
        assert len(workers) == 2
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 30
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "workers outlived the launcher by 30 s"
    finally:
        proc.kill()
        for pid in _workers(proc.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP and /proc")
def test_a_stopped_rank_ends_the_run_with_an_error_naming_it(tmp_path):
    run = tmp_path / "run"
    proc = _nproc_train(run, "--epochs", "500", env={distributed.TIMEOUT_ENV: "5"})
    workers = []
    try:
        _wait_for_an_epoch(run, proc)
        workers = sorted(_workers(proc.pid))
        rank_1 = next(p for p in workers if "RANK=1\0" in Path(f"/proc/{p}/environ").read_text())
        os.kill(rank_1, signal.SIGSTOP)
        stopped = time.monotonic()
        output, _ = proc.communicate(timeout=120)
        assert time.monotonic() - stopped < 90
        assert proc.returncode != 0
        assert "error: rank 0 of 2 waited 5 s for rank(s) 1 in a collective and gave up" in output, output
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGCONT)
        proc.kill()


@pytest.mark.slow
def test_an_error_every_rank_meets_is_printed_once(tmp_path):
    """Issue 23.9: under --nproc 2 an error found after the launch (here the data's classes) came
    once per rank."""
    spec = tmp_path / "seven.ei"
    spec.write_text('import "std"\nnetwork a(T = 2) {\n    h = flatten(image([1, 8, 8]))\n'
                    '    return readout(classifier(h, 7))\n}\n')
    cmd = [sys.executable, "-m", "eidsl", "train", str(spec), "--data", "digits", "--threads", "1", "--nproc", "2",
           "--out", str(tmp_path / "run")]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("has 10 classes but network 'a' outputs (7,)") == 1, done.stderr


def test_a_worker_whose_launcher_died_before_it_started_ends_at_once(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    code = "import time\nfrom eidsl.train import distributed\ndistributed._die_with_launcher(3)\ntime.sleep(60)\n"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**_env(), distributed.LAUNCHER_ENV: str(gone.pid)})
    assert done.returncode == 1 and time.monotonic() - started < 30
    assert f"error: rank 3: the launcher (pid {gone.pid}) is gone; stopping" in done.stderr
