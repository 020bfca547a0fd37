"""What every data set is made of: its description, the samples with their transform pipeline,
readers of arrays held in memory, the canonical stratified split, and the one error type."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from eidsl.errors import EidslError


class DataError(EidslError):
    """A dataset is missing, malformed or unknown; the message says what and where."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    input_shape: tuple[int, ...]  # one sample: (C, H, W), or (T, C, H, W) when events
    classes: int
    events: bool
    train_size: int
    test_size: int


# ---------------------------------------------------------------------------
# Samples and pipelines

class Pipeline:
    """Transforms applied in order; any tensor they produce must be >= 0."""

    def __init__(self, *steps: Callable):
        self.steps = steps

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
            if isinstance(x, torch.Tensor) and x.numel() and float(x.min()) < 0:
                raise DataError(f"transform {step!r} made an input negative (min {float(x.min()):.4g}); "
                                "E-I networks need inputs >= 0")
        return x

    def __repr__(self) -> str:
        return f"Pipeline{self.steps!r}"


class Samples(Dataset):
    """(input, label) pairs: `read(i)` loads raw item i, `pipeline` turns it into a float32 tensor.

    `random` marks a pipeline that draws random numbers; only those are seeded
    per sample (see the module docstring).
    """

    def __init__(self, read: Callable[[int], object], labels: Sequence[int], pipeline: Pipeline,
                 *, random: bool = False, seed: int = 0):
        self.read, self.labels, self.pipeline = read, np.asarray(labels, dtype=np.int64), pipeline
        self.random, self.seed = random, seed
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        raw = self.read(index)
        if not self.random:
            return self.pipeline(raw).float(), int(self.labels[index])
        seed = self._sample_seed(index)  # outside fork_rng, so a salt drawn from the global generator advances it
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only, which is all fork_rng restores: torch.manual_seed would also
            # queue a seeding of every lazy accelerator, formatting a stack trace each time (70 %
            # of an MNIST item's cost).
            torch.default_generator.manual_seed(seed)
            x = self.pipeline(raw)
        return x.float(), int(self.labels[index])

    def _sample_seed(self, index: int) -> int:
        if self.epoch is None:
            key = [self.seed, 1, int(torch.randint(0, 2**62, ())), index]
        else:
            key = [self.seed, 0, self.epoch, index]
        return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ArrayReader:
    """Items of an in-memory integer array, scaled to [0, 1] by dividing by `full_scale`."""

    def __init__(self, array: np.ndarray, full_scale: float):
        self.array, self.full_scale = torch.from_numpy(np.ascontiguousarray(array)), full_scale

    def __call__(self, index: int) -> torch.Tensor:
        return self.array[index].float() / self.full_scale


def _identity(x):
    return x


def _in_memory(name: str, images: np.ndarray, labels: np.ndarray, full_scale: float,
               train_idx: np.ndarray, test_idx: np.ndarray, classes: int):
    """Static images with no augmentation (the reference uses ToTensor only for MNIST-like data)."""
    plain = Pipeline(_identity)
    train = Samples(ArrayReader(images[train_idx], full_scale), labels[train_idx], plain)
    test = Samples(ArrayReader(images[test_idx], full_scale), labels[test_idx], plain)
    return train, test, DatasetInfo(name, tuple(images.shape[1:]), classes, False, len(train), len(test))


def stratified_split(labels: np.ndarray, train_fraction: Fraction) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the first ceil(fraction * n) items in file order train, the rest test.

    Selecting by each class's own indices makes this independent of how the
    file is ordered; ceil matches SpikingJelly's split_to_train_test_set.
    Both index arrays come back in file order.
    """
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cut = math.ceil(train_fraction * len(idx))
        train.append(idx[:cut])
        test.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))



def _need_dir(name: str, data_dir, expected: str) -> Path:
    if data_dir is None:
        raise DataError(f"{name} needs data_dir: a folder holding {expected}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{name}: data_dir {root} is not a folder (expected it to hold {expected})")
    return root
