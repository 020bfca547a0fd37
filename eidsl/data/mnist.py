"""MNIST from its IDX files (plain or .gz), in the published layout or torchvision's MNIST/raw/."""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
from eidsl.data.samples import DataError, _in_memory, _need_dir



# ---------------------------------------------------------------------------
# MNIST from IDX files

_IDX_IMAGES, _IDX_LABELS = 2051, 2049
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzipped) with the given magic number."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, shorter than its header)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "image" if magic == _IDX_IMAGES else "label"
        raise DataError(f"{path}: not an IDX {kind} file (magic number {found}, expected {magic})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    body = memoryview(raw)[4 + 4 * ndim:]
    if len(body) != math.prod(shape):
        raise DataError(f"{path}: IDX header promises shape {shape} = {math.prod(shape)} bytes "
                        f"but the file holds {len(body)}; truncated or corrupt")
    return np.frombuffer(body, np.uint8).reshape(shape)


def _find_mnist_file(roots: list[Path], stem: str) -> Path | None:
    for root in roots:
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_mnist(data_dir, T, augment_train, seed):
    root = _need_dir("mnist", data_dir, "the four MNIST IDX files " + ", ".join(sum(_MNIST_FILES.values(), ())))
    roots = [root, root / "MNIST" / "raw"]
    stems = sum(_MNIST_FILES.values(), ())
    found = {stem: _find_mnist_file(roots, stem) for stem in stems}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise DataError(f"mnist: missing {', '.join(missing)} (optionally .gz) in {root} or {root / 'MNIST' / 'raw'}")
    parts = []
    for split, (images_stem, labels_stem) in _MNIST_FILES.items():
        images = read_idx(found[images_stem], _IDX_IMAGES)
        labels = read_idx(found[labels_stem], _IDX_LABELS).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"mnist: {found[images_stem]} has {len(images)} images but "
                            f"{found[labels_stem]} has {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise DataError(f"mnist: {found[labels_stem]} has label {labels.max()}, expected 0-9")
        parts.append((images[:, None], labels))
    (train_x, train_y), (test_x, test_y) = parts
    images, labels = np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])
    train_idx, test_idx = np.arange(len(train_y)), np.arange(len(train_y), len(labels))
    return _in_memory("mnist", images, labels, 255.0, train_idx, test_idx, 10)
