"""One training process of tests/train/test_distributed.py, run alone or under torchrun.

    python ddp_worker.py OUT K STOP_EPOCH STOP_BATCH

Trains the tiny E-I MLP on digits (settings in SETTINGS) in the run folder OUT/run-<rank>
(every rank names its own; rank 0's name must win), saves this rank's weights right after
E-I Init (OUT/init-<world>-<rank>.pt) and after K updates (OUT/step-<world>-<rank>.pt), and
stops like Ctrl-C at (STOP_EPOCH, STOP_BATCH) completed, or trains to the end when STOP_EPOCH < 0.
"""
import os
import sys

import torch

from eidsl.train import distributed
from eidsl.train import trainer as training
from eidsl.api import load_graph
from eidsl.train.config import TrainConfig

SPEC_SETS = {"depth": "2", "input": "[1,8,8]"}
# An odd batch size: the two ranks get shares of 62 and 63, which the loss weighting must even out.
SETTINGS = dict(data="digits", epochs=2, batch_size=125, lr=0.01, warmup_epochs=1, seed=7, threads=1)


def main(out: str, k: int, stop_epoch: int, stop_batch: int) -> None:
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    tag = f"{world}-{rank}"
    real_init = training.ei_init

    def ei_init_and_save(net, x, **kwargs):
        result = real_init(net, x, **kwargs)
        torch.save(net.state_dict(), f"{out}/init-{tag}.pt")
        return result

    def after_batch(trainer):
        if (trainer.epoch, trainer.batch) == (0, k):
            torch.save(trainer.net.state_dict(), f"{out}/step-{tag}.pt")
        if (trainer.epoch, trainer.batch) == (stop_epoch, stop_batch):
            raise KeyboardInterrupt

    training.ei_init = ei_init_and_save
    graph = load_graph(os.path.join(os.path.dirname(__file__), "..", "specs", "mlp.ei"), SPEC_SETS)
    trainer = training.Trainer(graph, TrainConfig(**SETTINGS), f"{out}/run-{rank}", log=print,
                               on_batch_end=after_batch)
    trainer.start()
    try:
        trainer.fit()
    except training.Interrupted as stopped:
        if trainer.world.main:
            print(stopped)
    finally:
        training.ei_init = real_init     # the single-process reference runs inside pytest
        distributed.leave()


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:5]))
