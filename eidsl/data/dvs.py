"""Event-camera data (DVS128 Gesture, CIFAR10-DVS): event files read and framed into T frames."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from eidsl.data.augment import OneOf, RandomRoll, SquareCutout
from eidsl.data.samples import DataError, DatasetInfo, Pipeline, Samples, _need_dir, stratified_split


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
