"""CIFAR-10/100 from torchvision's python batches, unpickled by an unpickler that builds arrays
and nothing else (torchvision's own reader would run code from a doctored file)."""
from __future__ import annotations

import functools
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eidsl.data.augment import Cutout
from eidsl.data.samples import ArrayReader, DataError, DatasetInfo, Pipeline, Samples, _identity, _need_dir


# ---------------------------------------------------------------------------
# CIFAR-10/100 from torchvision's python pickles, read without running code

@functools.cache
def _allowed_globals() -> dict[tuple[str, str], object]:
    import _codecs
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray
    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,  # files written by NumPy 1.x (the real CIFAR files)
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): multiarray.scalar,
        ("_codecs", "encode"): _codecs.encode,  # how protocol-2 pickles spell Python 3 bytes
    }


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays; refuses every other global, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str):
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def load_pickle(path: Path) -> object:
    """Read a CIFAR python batch safely. latin1 is what NumPy needs for Python 2 pickles."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, encoding="latin1").load()
    except Exception as err:  # any parse failure of an untrusted file is a data problem
        raise DataError(f"{path}: not a CIFAR python batch ({type(err).__name__}: {err})") from None


def _str_keys(obj: object, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    classes: int


_CIFAR = {
    "cifar10": _CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                            ("test_batch",), "batches.meta", "labels", "label_names", 10),
    "cifar100": _CifarLayout("cifar-100-python", ("train",), ("test",), "meta",
                             "fine_labels", "fine_label_names", 100),
}


def _read_cifar_batches(folder: Path, files: Sequence[str], layout: _CifarLayout):
    images, labels = [], []
    for name in files:
        path = folder / name
        batch = _str_keys(load_pickle(path), path)
        data, y = batch.get("data"), batch.get(layout.label_key)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
        y = np.asarray(y if y is not None else [], dtype=np.int64)
        if y.shape != (len(data),) or (y.size and (y.min() < 0 or y.max() >= layout.classes)):
            raise DataError(f"{path}: '{layout.label_key}' must hold {len(data)} labels in 0..{layout.classes - 1}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _load_cifar(name: str, data_dir, T, augment_train: bool, seed: int):
    from torchvision import transforms
    layout = _CIFAR[name]
    expected = [*layout.train, *layout.test, layout.meta]
    root = _need_dir(name, data_dir, f"{layout.folder}/ with {', '.join(expected)}")
    folder = root if root.name == layout.folder else root / layout.folder
    missing = [f for f in expected if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{name}: missing {', '.join(missing)} in {folder} (expected torchvision's "
                        f"python layout: {layout.folder}/ with {', '.join(expected)})")
    meta_path = folder / layout.meta
    label_names = _str_keys(load_pickle(meta_path), meta_path).get(layout.names_key)
    if not isinstance(label_names, list) or len(label_names) != layout.classes:
        raise DataError(f"{meta_path}: '{layout.names_key}' must list {layout.classes} class names")
    train_x, train_y = _read_cifar_batches(folder, layout.train, layout)
    test_x, test_y = _read_cifar_batches(folder, layout.test, layout)
    plain = Pipeline(_identity)
    train_pipeline = Pipeline(transforms.RandomCrop(32, padding=4), Cutout(),
                              transforms.RandomHorizontalFlip()) if augment_train else plain
    train = Samples(ArrayReader(train_x, 255.0), train_y, train_pipeline, random=augment_train, seed=seed)
    test = Samples(ArrayReader(test_x, 255.0), test_y, plain)
    return train, test, DatasetInfo(name, (3, 32, 32), layout.classes, False, len(train), len(test))
