"""The registry of data sets (one module per family beside it: packaged, mnist, cifar,
tinyimagenet, dvs; samples.py holds what they share), downloads, and `load`.

Nothing downloads unless asked (`download=True`: `fetch`, torchvision's downloader). Datasets that
do not ship with an installed package are read from a folder the user gives (`data_dir`); a missing or malformed file
raises `DataError` with a one-line message naming the path and the files
expected there. Inputs are never mean/std-normalised and every transform's
output is checked to be >= 0, because the E-I circuit's inhibitory ReLU is only
the identity for non-negative inputs (docs/science.md §1.3).

Augmentation is reproducible: the random draws for train item i come from a
torch generator seeded with (seed, epoch, i). Call `train.set_epoch(epoch)` at
the start of each epoch to get fresh draws per epoch that do not depend on the
DataLoader's worker count. Before the first `set_epoch`, the draws are salted
from torch's global generator instead, like plain torchvision transforms, so
they differ from epoch to epoch and follow `torch.manual_seed`.
"""
from __future__ import annotations

import difflib
import functools
from pathlib import Path

from torch.utils.data import Dataset

from eidsl.data.augment import RandomShift
from eidsl.data.cifar import _CIFAR, _load_cifar
from eidsl.data.dvs import _load_cifar10_dvs, _load_dvs_gesture, frame_events  # noqa: F401  (frame_events: public)
from eidsl.data.mnist import _MNIST_FILES, _find_mnist_file, _load_mnist
from eidsl.data.packaged import _load_digits, _load_mnist5k
from eidsl.data.samples import DataError, DatasetInfo, Pipeline
from eidsl.data.tinyimagenet import _load_tinyimagenet


# ---------------------------------------------------------------------------
# Entry points

_LOADERS = {
    "mnist5k": _load_mnist5k,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": functools.partial(_load_cifar, "cifar10"),
    "cifar100": functools.partial(_load_cifar, "cifar100"),
    "tinyimagenet": _load_tinyimagenet,
    "dvs-gesture": _load_dvs_gesture,
    "cifar10-dvs": _load_cifar10_dvs,
}


def names() -> list[str]:
    """Every dataset name `load` accepts."""
    return list(_LOADERS)


def _present(name: str, root: Path) -> bool:
    if name == "mnist":
        return all(_find_mnist_file([root, root / "MNIST" / "raw"], stem) for stem in sum(_MNIST_FILES.values(), ()))
    layout = _CIFAR[name]
    folder = root if root.name == layout.folder else root / layout.folder
    return all((folder / f).is_file() for f in (*layout.train, *layout.test, layout.meta))


DOWNLOADABLE = ("mnist", "cifar10", "cifar100")


def fetch(name: str, data_dir: str | Path | None) -> bool:
    """Fetch a dataset's files into data_dir with torchvision's downloader (checksums checked) when they
    are missing; False when they were already there. Only the download runs: torchvision's CIFAR classes
    read their batches with pickle.load, which could run code from a doctored file, so eidsl reads them
    itself (load_pickle)."""
    if name not in DOWNLOADABLE:
        raise DataError(f"{name}: --download fetches {', '.join(DOWNLOADABLE)} (torchvision's downloads); put "
                        f"{name}'s files in data_dir yourself (docs/data.md lists the layout)")
    if data_dir is None:
        raise DataError(f"{name}: --download needs --data-dir, the folder to download into")
    root = Path(data_dir).expanduser()
    if root.is_dir() and _present(name, root):
        return False
    from torchvision import datasets as tv
    cls = {"mnist": tv.MNIST, "cifar10": tv.CIFAR10, "cifar100": tv.CIFAR100}[name]
    fetcher = cls.__new__(cls)      # the download method alone, never the constructor's reading
    fetcher.root = str(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetcher.download()
    except Exception as exc:  # noqa: BLE001 - urllib, HTTP and checksum failures come as many types
        reason = str(getattr(exc, "reason", "") or exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{name}: download into {root} failed ({reason}); offline? put the files there "
                        "yourself (docs/data.md lists them)") from None
    return True


def load(name: str, data_dir: str | Path | None = None, *, T: int | None = None,
         augment: bool = True, seed: int = 0, shift: int = 0,
         download: bool = False) -> tuple[Dataset, Dataset, DatasetInfo]:
    """Return (train, test, info) for a dataset; items are (float32 tensor >= 0, int label).

    `T` is the number of event frames for DVS data (default 16 for dvs-gesture,
    10 for cifar10-dvs) and is ignored for static images, which the network
    repeats over time itself. `augment=False` gives the train split the test
    transforms. `seed` fixes the augmentation draws (see the module docstring);
    splits never depend on it. `shift` > 0 adds a random zero-filled
    translation of up to that many pixels per axis to the train split's
    transforms (after the dataset's own), when `augment` is on. `download`
    fetches missing mnist/cifar10/cifar100 files into data_dir (`fetch`).
    """
    if name not in _LOADERS:
        close = difflib.get_close_matches(str(name).lower(), names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DataError(f"unknown dataset '{name}'; {hint}known datasets: {', '.join(names())}")
    if T is not None and T < 1:
        raise DataError(f"T must be a positive number of frames, got {T}")
    if seed < 0:
        raise DataError(f"seed must be >= 0, got {seed}")
    if shift < 0:
        raise DataError(f"shift must be >= 0 pixels, got {shift}")
    if download:            # fetch what is missing; files already there are read as they are
        fetch(name, data_dir)
    train, test, info = _LOADERS[name](data_dir, T, augment, seed)
    if augment and shift:
        add_shift(train, info, shift, seed)
    return train, test, info


def add_shift(train: Dataset, info: DatasetInfo, shift: int, seed: int) -> None:
    """Append a random zero-filled translation of up to `shift` pixels to the train split's transforms."""
    if min(info.input_shape[-2:]) <= 2 * shift:
        raise DataError(f"shift {shift} would move a {info.name} image ({info.input_shape[-2]}x{info.input_shape[-1]} "
                        f"pixels) entirely out of view; use a shift below half its size")
    train.pipeline = Pipeline(*train.pipeline.steps, RandomShift(shift))
    train.random, train.seed = True, seed
