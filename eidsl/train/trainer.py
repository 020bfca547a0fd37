"""The training loop (docs/science.md §4): sign-constrained SGD, linear warm-up then per-iteration cosine,
cross-entropy on the time-averaged output, E-I Init on the first training batch.

A run lives in one folder (evaluation and rebuilding from checkpoints: evaluate.py):
    config.json        everything resolved (spec, sets, network parameters, training settings, data)
    graph.json         the network's IR, so the run can be rebuilt without its spec file
    metrics.jsonl      one line per epoch
    checkpoints/       last.safetensors (weights + training state), best.safetensors (weights)
    hist/epoch_K.npz   current and weight histograms after K epochs (0: after E-I Init)

Resuming restores weights, optimiser, scheduler and every random number generator
at the exact batch where the run stopped, so on CPU a resumed run ends with the
same weights, bit for bit, as one that was never interrupted.

Under torchrun (WORLD_SIZE > 1) the same loop trains with DistributedDataParallel
(distributed.py): every rank takes its share of each global batch, E-I Init sums its
statistics over the ranks, and rank 0 alone writes the run folder and prints.
"""
from __future__ import annotations

import io
import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from eidsl_compiler import kernels
from eidsl_compiler.allocator import keep_freed_memory
from eidsl_compiler.optim import adaptive_clip_

from eidsl.files import atomic_write
from eidsl.train import checkpoint as ckpt
from eidsl import ir
from eidsl.train import distributed
from eidsl.train import metrics
from eidsl.train import probe
from eidsl.train import runlock
from eidsl.api import build_graph, compile_network, ei_init, optimizer as make_optimizer
from eidsl.train.config import ConfigError, TrainConfig
from eidsl.errors import EidslError
from eidsl.train.evaluate import BEST, LAST, TrainingError, evaluate, load_data, test_loader
from eidsl.train import health, monitor
from eidsl.train.circuit_log import CircuitMonitor

__all__ = ["Trainer", "make_scheduler", "Interrupted", "NonFiniteError", "TrainingError", "HealthError"]

HealthError = health.HealthError

HIST_SAMPLES = 256


class RunInUse(EidslError):
    """Another process trains in the run folder."""


class NonFiniteError(EidslError):
    """The loss or a parameter went inf/NaN; the last good checkpoint is kept."""
    exit_code = 4


class Interrupted(EidslError):
    """Ctrl-C: the run was saved and can be resumed."""
    exit_code = 130

    def render(self) -> str:
        return str(self)


# ---------------------------------------------------------------- schedule


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int):
    """Linear warm-up from init_lr to lr over warmup_epochs, then cosine to 0 (or, with
    schedule = "constant", lr throughout); stepped every iteration."""
    total = cfg.epochs * iters_per_epoch
    warm = min(round(cfg.warmup_epochs * iters_per_epoch), total - 1)
    if cfg.schedule == "constant":   # DANN's recipe: one rate throughout (warm-up still honoured)
        cosine = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warm, eta_min=0.0)
    if warm == 0:
        return cosine
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=cfg.init_lr / cfg.lr, end_factor=1.0,
                                               total_iters=warm)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warm])


# ---------------------------------------------------------------- the trainer


class Trainer:
    """One run. `fit()` trains to the configured number of epochs, resuming where the run folder left off.

    `on_batch_end(trainer)` and `on_epoch_end(trainer)` callbacks run at points where the
    state is consistent; raising KeyboardInterrupt there behaves exactly like Ctrl-C.
    """

    def __init__(self, graph: ir.Graph, cfg: TrainConfig, run_dir: str | Path, *, spec: str | None = None,
                 sets: dict[str, str] | None = None, log: Callable[[str], None] = print, progress: bool = False,
                 on_batch_end: Callable | None = None, on_epoch_end: Callable | None = None,
                 warn: Callable[[str], None] | None = None, weights: str | Path | None = None, include=(),
                 spec_text: dict | None = None):
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("training setting 'device' = 'cuda': no CUDA device is available; use --device cpu")
        self.world = distributed.join(cfg.device)
        self.device = self.world.device
        self.graph, self.cfg = graph, cfg
        self.run = Path(self.world.broadcast(str(run_dir)))   # a default folder name is rank 0's
        self.spec, self.sets = spec, dict(sets or {})
        # A resumed run passes the text it saved: the file may have changed since.
        self.spec_text = spec_text if spec_text is not None else _spec_text(spec, include)
        self.weights = None if weights is None else str(weights)
        self.log = log if self.world.main else _silent
        warn = warn or (lambda line: log(line))
        self.warn = warn if self.world.main else _silent
        self.show_progress = progress and self.world.main
        # The first batch waits for the layer kernels when this machine has not compiled them yet: say so.
        kernels.on_cold_compile(lambda: self.log("compiling kernels (once)…"))
        self.on_batch_end, self.on_epoch_end = on_batch_end, on_epoch_end
        # Checked now, opened at the first record: a run refused later (a bad resume) leaves no event file.
        self._writer_class = self._tensorboard() if cfg.tensorboard and self.world.main else None
        self._writer = None

        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cpu":
            keep_freed_memory()
        _seed_everything(cfg.seed)
        self.train_set, self.test_set, self.info = load_data(graph, cfg)
        for note in cfg._notes:
            self.log(f"note: {note}")
        if self.world.distributed:
            self._check_shares()
        self.net = build_graph(graph, cfg.seed).to(self.device)
        self.model = distributed.wrap(self.net, self.world) if self.world.distributed else self.net
        if cfg.compile:
            self.model = compile_network(self.model)
        # A compiled or DDP forward keeps no intermediate tensors: firing rates are then sampled.
        self.rates_sampled = cfg.compile or self.world.distributed
        self.optimizer = make_optimizer(self.net, cfg.lr, cfg.momentum, cfg.weight_decay, rule=cfg.optimizer)
        self.iters_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)
        self.scheduler = make_scheduler(self.optimizer, cfg, self.iters_per_epoch)
        self.data_generator = torch.Generator().manual_seed(cfg.seed)
        self.test_loader = test_loader(self.test_set, cfg,
                                       self.world.share(len(self.test_set)) if self.world.distributed else None)

        self.epoch = 0          # completed epochs
        self.batch = 0          # completed batches of epoch `self.epoch`
        self.best = {"accuracy": -1.0, "epoch": 0}
        self.last: dict[str, Any] | None = None
        self.meter = metrics.EpochMeter()
        self.epoch_seconds = 0.0
        self.circuit = CircuitMonitor(self.run, cfg.circuit_every, enabled=self.world.main)
        self.needs_init = any(s.init.data_dependent for s in self.net.param_specs.values())
        self.populations = monitor.populations(self.net)
        self.warned: set[str] = set()     # health warnings already printed (each is printed once per run)
        self._last_x: torch.Tensor | None = None   # the epoch's last batch, for the health check
        if weights is not None:
            self._load_start_weights(Path(weights))
        self._epoch_rng: torch.Tensor | None = None   # the data generator at the start of this epoch
        self._in_epoch = False
        self._mutating = False
        self._stop = False
        self._lock_fd = None

    # ---------------------------------------------------------------- run folder

    @property
    def checkpoints(self) -> Path:
        return self.run / "checkpoints"

    def _lock(self) -> None:
        """Hold the run folder against a second writer (a concurrent --resume, the same --out twice)."""
        why = None
        if self.world.main and self._lock_fd is None:
            try:
                self._lock_fd, why = runlock.acquire(self.run)
            except OSError as exc:
                why = f"cannot lock the run folder {self.run}: {exc.strerror or exc}"
        why = self.world.broadcast(why)
        if why:
            raise RunInUse(why)

    def _unlock(self) -> None:
        runlock.release(self._lock_fd)
        self._lock_fd = None

    def start(self) -> None:
        """Create the run folder of a fresh run."""
        self._lock()
        try:
            self._start()
        except BaseException:
            self._unlock()
            raise

    def _start(self) -> None:
        if (self.run / "config.json").exists():
            raise EidslError(f"{self.run} already holds a run; continue it with `eidsl train --resume {self.run}` "
                             "or choose another --out")
        self.world.barrier()    # every rank has looked before rank 0 writes
        if not self.world.main:
            return
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EidslError(f"cannot create the run folder {self.checkpoints}: {exc.strerror or exc}") from None
        atomic_write(self.run / "config.json", json.dumps(self.describe(), indent=1))
        atomic_write(self.run / "graph.json", self.graph.dumps())
        atomic_write(self.run / "metrics.jsonl", "")

    def describe(self) -> dict[str, Any]:
        from eidsl import __version__
        return {"format": "eidsl-run/1", "spec": self.spec, "spec_text": self.spec_text, "sets": self.sets,
                "weights": self.weights,
                "network": {"name": self.graph.name, "params": self.graph.params,
                            "layers": probe.spiking_layers(self.net),
                            "populations": monitor.describe(self.net)},
                "parameters": sum(p.numel() for p in self.net.parameters()),
                "train": self.cfg.model_dump(), "adapted": list(self.cfg._notes), "data": asdict(self.info),
                "iterations_per_epoch": self.iters_per_epoch, "histogram_epochs": self.cfg.histogram_epochs(),
                "versions": {"eidsl": __version__, "torch": torch.__version__},
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}

    def _load_start_weights(self, path: Path) -> None:
        """Fine-tuning: the checkpoint's weights replace the initial ones (and the data-dependent E-I Init,
        which would rescale them)."""
        from eidsl.train.evaluate import checkpoint_path
        path = checkpoint_path(path)
        c = ckpt.load(path, with_state=False)
        ckpt.check_network(c.meta, self.graph.to_json(), path, "this run trains")
        ckpt.load_weights(self.net, c.weights, path)
        self.needs_init = False
        if c.meta.get("spec_text") and not self.spec_text:
            self.spec_text = c.meta["spec_text"]

    def resume(self) -> None:
        """Restore the state saved in the run folder's last checkpoint."""
        path = self.checkpoints / LAST
        if not path.is_file():
            raise ckpt.CheckpointError(f"{path}: no such checkpoint")
        self._lock()
        try:
            self._resume(path)
        except BaseException:
            self._unlock()
            raise

    def _resume(self, path: Path) -> None:
        c = ckpt.load(path)
        ckpt.check_network(c.meta, self.graph.to_json(), path, f"the run {self.run} trains")
        ckpt.load_weights(self.net, c.weights, path)
        if c.state is None:
            raise ckpt.CheckpointError(f"{path}: holds weights only, no training state to resume from")
        s = c.state
        try:
            # Checked before use: the training loop would fail on a crafted value much later.
            for key in ("epoch", "batch"):
                if isinstance(s[key], bool) or not isinstance(s[key], int) or not 0 <= s[key] < 2**62:
                    raise ValueError(f"'{key}' is {s[key]!r}, not a count")
            if not isinstance(s["best"], dict) or not (s["last"] is None or isinstance(s["last"], dict)) or \
                    isinstance(s["best"]["accuracy"], bool) or not isinstance(s["best"]["accuracy"], (int, float)):
                raise ValueError("'best' and 'last' are not records of an epoch")
            if not isinstance(s["needs_init"], bool):
                raise ValueError(f"'needs_init' is {s['needs_init']!r}, not true or false")
            self.optimizer.load_state_dict(s["optimizer"])
            self.scheduler.load_state_dict(s["scheduler"])
            ckpt.restore_rng(s["rng"], self.data_generator)
            self.epoch, self.batch, self.best, self.last = s["epoch"], s["batch"], s["best"], s["last"]
            self.meter.load_state_dict(s["meter"])
            self.epoch_seconds, self.needs_init = s["epoch_seconds"], s["needs_init"]
            self.warned = set(s.get("warned", []))
        except Exception as exc:
            raise ckpt.CheckpointError(f"{path}: damaged training state, cannot resume from it "
                                       f"({type(exc).__name__}: {exc})") from None
        if self.world.main:
            metrics.truncate(self.run / "metrics.jsonl", self.epoch)
            self.circuit.truncate(self.epoch * self.iters_per_epoch + self.batch)
            self._settle_best(c)

    def _settle_best(self, last: ckpt.Checkpoint) -> None:
        """Rewrite best.safetensors when a crash came between the two writes of an improved epoch."""
        try:
            _, behind = ckpt.best_weights(self.checkpoints)
        except ckpt.CheckpointError as exc:   # the best weights are lost; training on is still right
            self.log(f"warning: {exc}; `eval --best` refuses the run until an epoch improves on the record")
            return
        if behind:
            ckpt.save(self.checkpoints / BEST, last.weights, None, {**last.meta, "test_accuracy": self.best["accuracy"]})
            self.log(f"rewrote {self.checkpoints / BEST} from the last checkpoint: the run had stopped before "
                     f"writing epoch {self.best['epoch']}'s best weights")

    def save(self) -> Path:
        """Write last.safetensors: weights and everything needed to continue from this exact batch."""
        path = self.checkpoints / LAST
        if not self.world.main:
            return path
        data_state = self._epoch_rng if self._in_epoch else self.data_generator.get_state()
        state = {"epoch": self.epoch, "batch": self.batch, "best": self.best, "last": self.last,
                 "needs_init": self.needs_init,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": {**ckpt.capture_rng(), "data": data_state},
                 "meter": self.meter.state_dict(), "epoch_seconds": self.epoch_seconds,
                 "warned": sorted(self.warned)}
        ckpt.save(path, self.net.state_dict(), state, self._meta())
        return path

    def _meta(self, **extra) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "graph": self.graph.to_json(),
                "data": self.cfg.data, "data_dir": self.cfg.data_dir, "spec": self.spec, "spec_text": self.spec_text,
                "sets": self.sets, **extra}

    # ---------------------------------------------------------------- training

    def fit(self) -> dict[str, Any]:
        previous = self._catch_sigint()
        try:
            while self.epoch < self.cfg.epochs:
                self._train_epoch()
                self._finish_epoch()
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            self._unlock()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return self.summary()

    def summary(self) -> dict[str, Any]:
        last = self.last or {}
        return {"accuracy": last.get("test_accuracy"), "best_accuracy": self.best["accuracy"],
                "best_epoch": self.best["epoch"], "epochs": self.epoch}

    def _check_shares(self) -> None:
        n, size, ranks = len(self.train_set), self.cfg.batch_size, self.world.size
        last = n % size or size
        if min(size, last) < ranks:
            raise ConfigError(f"training setting 'batch_size' = {size}: with {ranks} processes every global batch "
                              f"needs at least {ranks} samples, but with {n} training samples the last batch of an "
                              f"epoch holds {last}; choose another batch size")

    def _permutation(self) -> torch.Tensor:
        # A mid-epoch checkpoint stores the generator as it was at the start of its epoch,
        # so a resumed run draws the same order and skips the batches already done.
        self._epoch_rng, self._in_epoch = self.data_generator.get_state(), True
        return torch.randperm(len(self.train_set), generator=self.data_generator)

    def _train_epoch(self) -> None:
        cfg = self.cfg
        if self.batch == 0:
            self.meter, self.epoch_seconds = metrics.EpochMeter(), 0.0
        order = self._permutation()[self.batch * cfg.batch_size:].tolist()
        self.train_set.set_epoch(self.epoch)
        # Global batches, the same on every rank; each rank loads only its share.
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        shares = [b[self.world.share(len(b))] for b in batches]
        loader = DataLoader(self.train_set, batch_sampler=shares, num_workers=cfg.workers,
                            generator=torch.Generator().manual_seed(cfg.seed * 100003 + self.epoch))
        self.model.train()
        started = time.perf_counter()
        with self._progress() as bar:
            task = bar.add_task("", total=self.iters_per_epoch, completed=self.batch,
                                epoch=f"{self.epoch + 1}/{cfg.epochs}", stats="")
            for (x, y), batch in zip(loader, batches):
                self._step(x.to(self.device), y.to(self.device), len(batch))
                self.epoch_seconds += time.perf_counter() - started
                started = time.perf_counter()
                bar.update(task, advance=1, stats=self._stats())
                self._safe_point(self.on_batch_end)

    def _step(self, x: torch.Tensor, y: torch.Tensor, global_size: int) -> None:
        """One update on a global batch of `global_size` samples, of which this rank holds x, y."""
        if self.needs_init:
            self._mutating = True
            # Summing the statistics over the ranks makes every rank's draws those of the global batch.
            ei_init(self.net, x, seed=self.cfg.seed, reduce=self.world.sum)
            self.needs_init = False
            self._mutating = False
        if self.epoch == 0 and self.batch == 0 and 0 in self.cfg.histogram_epochs():
            self._record_histograms(0)
        sample_rates = not self.rates_sampled or self.batch % self.cfg.rate_every == 0
        if self.rates_sampled:
            logits, env = self.model(x), None
        else:
            env = self.net.run(x, keep=True)
            logits = env[self.net.plan.output]
        loss = F.cross_entropy(logits, y)
        if sample_rates and env is None:
            env = self._sample(x)
        step = self.epoch * self.iters_per_epoch + self.batch
        if self.circuit.due(step):
            self.circuit.record(self.net, env if env is not None else self._sample(x), epoch=self.epoch + 1,
                                batch=self.batch + 1, step=step)
        batch = metrics.EpochMeter()
        batch.add(loss, logits, y, monitor.rates(self.net, env) if sample_rates else None)
        self._last_x = x
        if self.world.distributed:
            batch = batch.total(self.world.sum)
        if not math.isfinite(batch.mean_loss):   # every rank sees the same sums, so all stop together
            raise self._nonfinite(x, f"the loss is {batch.mean_loss} at epoch {self.epoch + 1}, batch {self.batch + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        self._weighted(loss, y.shape[0], global_size).backward()
        # Checked before the update, so the diagnosis sees the weights that made them.
        bad_gradients = probe.nonfinite_gradients(self.net)
        if bad_gradients:
            raise self._nonfinite(x, f"the gradients of {_names(bad_gradients)} are non-finite at epoch "
                                     f"{self.epoch + 1}, batch {self.batch + 1}")
        if self.cfg.agc:
            adaptive_clip_(self.net.parameters(), self.cfg.agc, self.cfg.agc_eps)
        if self.cfg.grad_clip:
            # foreach clipping scales by a tensor factor: no host sync
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip, foreach=True)
        self._mutating = True
        self.optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.net.parameters()):
            raise self._nonfinite(x, f"parameters {_names(probe.nonfinite_parameters(self.net))} are "
                                     f"non-finite after the update of epoch {self.epoch + 1}, batch {self.batch + 1}")
        self.meter.lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.meter.merge(batch)
        self.batch += 1
        self._mutating = False

    def _weighted(self, loss: torch.Tensor, share: int, global_size: int) -> torch.Tensor:
        """DDP averages the ranks' gradients; weighting each rank's mean loss by its share of the
        global batch makes that average the gradient of the global batch's mean loss, also when the
        shares differ by one."""
        if not self.world.distributed:
            return loss
        return loss * (share * self.world.size / global_size)

    def _sample(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor of a forward that changes nothing, for firing rates."""
        with torch.no_grad(), probe.frozen(self.net):
            return self.net.run(x, keep=True)

    def _finish_epoch(self) -> None:
        cfg = self.cfg
        epoch = self.epoch + 1
        spiking, interneurons = monitor.split(self.meter.mean_rates(), self.populations)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": self.meter.mean_loss,
                                  "train_accuracy": self.meter.accuracy,
                                  "lr": self.meter.lr, "firing_rates": spiking,
                                  "firing_rate": sum(spiking.values()) / len(spiking) if spiking else None,
                                  "step_seconds": self.epoch_seconds / max(self.iters_per_epoch, 1)}
        if interneurons:
            record["interneuron_rates"] = interneurons
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            started = time.perf_counter()
            if self.world.distributed:   # each rank tests its share on the bare network, no DDP collectives
                result = evaluate(self.net, self.test_loader, self.device, sum_over_ranks=self.world.sum)
            else:
                result = evaluate(self.model, self.test_loader, self.device, with_rates=not cfg.compile)
            self.epoch_seconds += time.perf_counter() - started
            record.update(test_loss=result["loss"], test_accuracy=result["accuracy"],
                          test_firing_rates=result["rates"])
            if result.get("interneuron_rates"):
                record["test_interneuron_rates"] = result["interneuron_rates"]
        warnings = self._health(epoch)
        if warnings:
            record["warnings"] = [w.to_json() for w in warnings]
        record["seconds"] = self.epoch_seconds
        if self.world.main:
            metrics.append(self.run / "metrics.jsonl", record)
        self._tensorboard_epoch(record)
        self.log(self._summary_line(record))
        # Under --strict the first warning is the stop's own message.
        for w in warnings[1:] if cfg.strict else warnings:
            if w.key not in self.warned:
                self.warn(f"warning: {w.message}")
        self.warned.update(w.key for w in warnings)

        self._mutating = True
        self.epoch, self.batch, self.last, self._in_epoch = epoch, 0, record, False
        improved = record.get("test_accuracy", -1.0) > self.best["accuracy"]
        if improved:
            self.best = {"accuracy": record["test_accuracy"], "epoch": epoch}
        self._mutating = False
        self.save()
        if improved and self.world.main:
            ckpt.save(self.checkpoints / BEST, self.net.state_dict(), None,
                      self._meta(test_accuracy=record["test_accuracy"]))
        if epoch in cfg.histogram_epochs():
            self._record_histograms(epoch)
        if cfg.strict and self.world.any(bool(warnings)):   # every rank stops after the same epoch
            raise self._strict_stop(epoch, warnings)
        self._safe_point(self.on_epoch_end)

    # ---------------------------------------------------------------- reporting

    def _stats(self) -> str:
        m = self.meter
        rates = monitor.summary(m.mean_rates(), self.populations)
        return f"loss {m.mean_loss:.4f}  acc {100 * m.accuracy:.1f}%  lr {m.lr:.2e}" + (f"  {rates}" if rates else "")

    def _summary_line(self, r: dict[str, Any]) -> str:
        rates = r["firing_rates"]
        line = (f"epoch {r['epoch']:>3}/{self.cfg.epochs}  train loss {r['train_loss']:.4f} "
                f"acc {100 * r['train_accuracy']:.2f}%")
        if "test_accuracy" in r:
            line += f"  test loss {r['test_loss']:.4f} acc {100 * r['test_accuracy']:.2f}%"
        line += f"  lr {r['lr']:.2e}"
        summary = monitor.summary({**rates, **r.get("interneuron_rates", {})}, self.populations)
        if summary:
            line += f"  {summary}"
        if r.get("warnings"):
            line += f"  [{len(r['warnings'])} warning{'s' if len(r['warnings']) > 1 else ''}]"
        return line + f"  {r['seconds']:.1f}s"

    def final_line(self) -> str:
        s = self.summary()
        if s["accuracy"] is None:
            return "test accuracy: n/a (no epoch finished)"
        return (f"test accuracy: {100 * s['accuracy']:.2f}% "
                f"(best {100 * s['best_accuracy']:.2f}% at epoch {s['best_epoch']})")

    def _progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        from rich.progress import TimeRemainingColumn
        return Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        transient=True, disable=not self.show_progress)

    def _record_histograms(self, epoch: int) -> None:
        if not self.world.main:
            return
        xs = [self.test_set[i][0] for i in range(min(HIST_SAMPLES, len(self.test_set)))]
        quantities = probe.layer_quantities(self.net, torch.stack(xs).to(self.device))
        hists = probe.quantity_histograms(quantities)
        if self.writer is not None:
            # The same tensors as the npz, binned by TensorBoard: currents on the test samples, weights.
            for layer, values in quantities.items():
                for name, t in values.items():
                    t = t.detach().float().reshape(-1).cpu()
                    t = t[torch.isfinite(t)]
                    if t.numel():
                        self.writer.add_histogram(f"{name}/{layer}", t, epoch)
            self.writer.flush()
        buffer = io.BytesIO()
        np.savez(buffer, **hists)
        (self.run / "hist").mkdir(exist_ok=True)
        ckpt.atomic_write(self.run / "hist" / f"epoch_{epoch:04d}.npz", buffer.getvalue())

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard event files need the tensorboard package: pip install tensorboard "
                              "(or pass --no-tensorboard)") from None
        return SummaryWriter

    @property
    def writer(self):
        if self._writer is None and self._writer_class is not None:
            self._writer = self._writer_class(str(self.run / "tensorboard"))
        return self._writer

    def _tensorboard_epoch(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record["epoch"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, step)
        for group in ("firing_rates", "test_firing_rates", "interneuron_rates", "test_interneuron_rates"):
            for layer, value in record.get(group, {}).items():
                self.writer.add_scalar(f"{group}/{layer}", value, step)
        self.writer.flush()

    # ---------------------------------------------------------------- stopping

    def _safe_point(self, callback: Callable | None) -> None:
        if callback is not None:
            callback(self)
        if self.world.any(self._stop):   # a Ctrl-C reaches the ranks at different batches; all stop at one
            raise KeyboardInterrupt

    def _catch_sigint(self):
        """First Ctrl-C: finish the current batch, save, stop. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True
        return signal.signal(signal.SIGINT, handler)

    def _interrupted(self) -> Interrupted:
        where = f"epoch {self.epoch + 1}, batch {self.batch}" if self.batch else f"the end of epoch {self.epoch}"
        if self._mutating:
            if not (self.checkpoints / LAST).exists():
                return Interrupted(f"interrupted before anything could be saved; delete {self.run} and start again")
            saved = f"kept the last checkpoint ({self.checkpoints / LAST}), stopped inside an update"
        else:
            self.save()
            saved = f"saved {self.checkpoints / LAST} at {where}"
        return Interrupted(f"interrupted: {saved}\nresume with: eidsl train --resume {self.run}")

    def _health(self, epoch: int) -> list[health.HealthWarning]:
        """This epoch's health warnings (health.py). A population counts as silent or saturated when it was
        in every measured batch, on every rank."""
        m = self.meter
        flags = health.rate_flags(self.populations, m.rate_min, m.rate_max)
        if self.world.distributed:
            names = [p.name for p in self.populations]
            votes = torch.tensor([[flags.get(n) == "saturated", flags.get(n) == "silent"] for n in names],
                                 dtype=torch.float64).reshape(-1, 2)
            votes = self.world.sum(votes)
            flags = {n: kind for n, (sat, sil) in zip(names, votes.tolist())
                     for kind, v in (("saturated", sat), ("silent", sil)) if v == self.world.size}
        return health.check(self.net, self.populations, flags, m.mean_rates(), epoch, self._last_x)

    def _strict_stop(self, epoch: int, warnings: list[health.HealthWarning]) -> health.HealthError:
        first = warnings[0].message if warnings else "another training process found a health warning"
        more = f" (and {len(warnings) - 1} more, in {self.run / 'metrics.jsonl'})" if len(warnings) > 1 else ""
        return health.HealthError(
            f"training stopped by --strict after epoch {epoch}: {first}{more}. The run is saved and intact: "
            f"{self.checkpoints / LAST} (epoch {epoch}); look at it with `eidsl plot {self.run}`, or continue "
            f"without the stop: eidsl train --resume {self.run} --no-strict")

    def _nonfinite(self, x: torch.Tensor, what: str) -> NonFiniteError:
        first = probe.first_nonfinite(self.net, x)
        params = probe.nonfinite_parameters(self.net)
        culprit = f"the first non-finite tensor is {first}" if first else "every current is finite on this batch"
        if params and "parameters" not in what:
            culprit += f"; non-finite parameters: {_names(params)}"
        last = self.checkpoints / LAST
        kept = (f"the last good checkpoint is {last} (epoch {ckpt.load(last, with_state=False).meta['epoch']})"
                if last.exists() else "no checkpoint was written yet")
        return NonFiniteError(f"training stopped: {what}; {culprit}; {kept}. "
                             "Try a smaller --lr or a longer warm-up")


def _spec_text(spec, include) -> dict | None:
    """The spec's text and its imports' (sources.spec_sources); None when the file is gone."""
    if spec is None:
        return None
    from eidsl.train.sources import spec_sources
    try:
        return spec_sources(spec, include or ()) if Path(spec).is_file() else None
    except OSError:
        return None


def _silent(line: str) -> None:
    pass


def _names(items: list[str], shown: int = 4) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
