"""Multi-process training on PyTorch's own runtime: torchrun, the process group, DDP.

torchrun (or `eidsl train --nproc N`, which re-executes itself under it) starts one
process per rank and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
Every rank draws the same data order and takes the same global batch; each runs its
contiguous share, and the loss of a share is weighted by its size, so DDP's averaged
gradient equals one process's gradient on the whole global batch.
"""
from __future__ import annotations

import datetime
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from eidsl.errors import EidslError

__all__ = ["World", "DistributedError", "join", "leave", "wrap", "launch"]


class DistributedError(EidslError):
    """The process group cannot be formed, or the launch failed."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; a lone process is World() (rank 0 of 1)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n items (shares differ in size by at most one)."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of `t` over every rank (an all-reduce; nccl needs the tensor on the GPU)."""
        if not self.distributed:
            return t
        total = t.detach().to(self.device, copy=True)
        dist.all_reduce(total)
        return total.to(t.device)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (so all ranks stop at the same batch)."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor([float(flag)])).item() > 0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def join(device: str = "cpu") -> World:
    """This process's World; under torchrun (WORLD_SIZE > 1) it joins the process group:
    gloo on CPU, nccl on CUDA with one GPU per local rank."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    where = f"rank {rank} of {size} ({os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')})"
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"{where}: local rank {local_rank} has no GPU of its own "
                                   f"({torch.cuda.device_count()} visible); start at most that many processes per node")
        torch.cuda.set_device(local_rank)
        here = torch.device("cuda", local_rank)
    else:
        here = torch.device("cpu")
    if not dist.is_initialized():
        _die_with_launcher(rank)
        try:
            dist.init_process_group("nccl" if device == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=collective_timeout()))
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(f"{where}: cannot join the process group: {_first_line(exc)}") from None
    return World(rank, size, local_rank, here)


# A collective waits this long for the other ranks; a stopped or hung rank then ends the run with
# an error instead of holding the others forever. Long enough for rank 0's checkpoint writes and
# a first torch.compile; EIDSL_COLLECTIVE_TIMEOUT (seconds) changes it.
DEFAULT_TIMEOUT_S = 300
TIMEOUT_ENV = "EIDSL_COLLECTIVE_TIMEOUT"
LAUNCHER_ENV = "EIDSL_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1


def collective_timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not 0 < value < 1e7:
        raise DistributedError(f"{TIMEOUT_ENV}={text!r}: the collective timeout must be a number of seconds > 0")
    return value


def is_timeout(exc: BaseException) -> bool:
    """Whether a collective failed because a peer did not answer in time (gloo's and nccl's wording)."""
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


def quiet(exc: BaseException) -> bool:
    """Whether this process should leave `exc` to rank 0: errors of the spec, the settings or the data
    are the same on every rank, and one copy of the message is enough."""
    rank, size = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    if not (size.isdigit() and int(size) > 1 and rank != "0"):
        return False
    from eidsl.train.config import ConfigError
    from eidsl.errors import SpecError, SpecErrors
    from eidsl.train.evaluate import TrainingError
    from eidsl.train.trainer import RunInUse
    return isinstance(exc, (SpecError, SpecErrors, ConfigError, TrainingError, RunInUse))


def _die_with_launcher(rank: int) -> None:
    """End this worker when the process that started it dies (kill -9 of `eidsl train --nproc`):
    Linux's parent-death signal, and a watchdog polling the parent for other systems and for
    the case where the launcher's spawning thread, not the process, ended."""
    launcher = parent = os.getppid()
    started_by = os.environ.get(LAUNCHER_ENV, "")
    if started_by.isdigit() and int(started_by) != parent and not _alive(int(started_by)):
        launcher = int(started_by)     # `--nproc` died before this worker got here: the watchdog ends it at once
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            if os.getppid() != launcher or launcher != parent:
                sys.stderr.write(f"error: rank {rank}: the launcher (pid {launcher}) is gone; stopping "
                                 "(the last checkpoint is kept)\n")
                sys.stderr.flush()
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="eidsl-launcher-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:       # exists, owned by someone else
        return True
    return True


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(net: nn.Module, world: World) -> nn.Module:
    """DistributedDataParallel around the network.

    The plan is static, so `static_graph` lets DDP find once which parameters a
    network leaves unused (an ablated gain, say) instead of failing on them.
    """
    if world.device.type == "cuda":
        # One batch normalisation over the global batch, as a single process would compute it.
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    ids = [world.device.index] if world.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids, static_graph=True)


# ---------------------------------------------------------------- launching


def launch(nproc: int, module_args: list[str]) -> int:
    """Run `python -m <module_args>` in `nproc` processes on this machine under torchrun
    (torch.distributed.run, standalone rendezvous on a free port); returns the exit status
    of the first process that failed, 0 when all succeed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # The workers must import this package even when it is not installed (run from a checkout).
    root = str(Path(__file__).resolve().parents[2])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, paths)])
    os.environ[LAUNCHER_ENV] = str(os.getpid())   # the workers' parent: they end when it does
    # torchrun would set 1 itself, with a warning; --threads still applies inside each process.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The workers report their own errors in one line; torchrun's log would repeat them at length.
    logging.disable(logging.ERROR)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", *module_args]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode >= 0:
            return failure.exitcode
        # Killed by a signal, the process could say nothing itself.
        error = DistributedError(f"training process {rank} of {nproc} was killed by "
                                 f"{signal.Signals(-failure.exitcode).name}")
        error.exit_code = 128 - failure.exitcode
        raise error from None
    except SignalException as exc:   # Ctrl-C: torchrun passed it on, rank 0 saved and said so
        return 128 + int(exc.sigval)
    finally:
        logging.disable(logging.NOTSET)
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

