"""Tensor augmentations that keep spiking-network inputs non-negative.

Every random draw comes from torch's global generator (as torchvision's own
transforms do), so `eidsl.data.datasets` can make a sample's augmentation reproducible
by seeding that generator around one call. Python's `random` and NumPy's
generator are deliberately not used: they would escape that seeding.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(()).uniform_(low, high))


def _randint(low: int, high: int) -> int:
    """Integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, ()))


class Cutout:
    """Erase one random rectangle of a (C, H, W) image, filled with one random value per channel.

    The defaults are torchtoolbox's `Cutout()` as DeepEISNN uses it (p = 0.5,
    erased area 2-40 % of the image, aspect ratio 0.4-2.5). The reference fills
    a uint8 PIL image with a value in [0, 255]; this runs after ToTensor, so the
    fill is drawn in [0, 1] and the image stays in [0, 1].
    """

    def __init__(self, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.4),
                 ratio: tuple[float, float] = (0.4, 2.5)):
        self.p, self.scale, self.ratio = p, scale, ratio

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return img
        channels, height, width = img.shape[-3:]
        area = _uniform(*self.scale) * height * width
        aspect = _uniform(*self.ratio)
        h = min(height, int(math.sqrt(area * aspect)))
        w = min(width, int(math.sqrt(area / aspect)))
        top, left = _randint(0, height - h), _randint(0, width - w)
        out = img.clone()
        out[..., top:top + h, left:left + w] = torch.rand(channels, 1, 1, dtype=img.dtype)
        return out

    def __repr__(self) -> str:
        return f"Cutout(p={self.p}, scale={self.scale}, ratio={self.ratio})"


class SquareCutout:
    """Zero a length x length square (clipped at the border) around a random centre, in every frame.

    The cutout of the neuromorphic-data-augmentation recipe DeepEISNN uses for
    CIFAR10-DVS; works on (..., H, W).
    """

    def __init__(self, length: int = 16):
        self.length = length

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[-2:]
        y, x = _randint(0, height - 1), _randint(0, width - 1)
        half = self.length // 2
        out = frames.clone()
        out[..., max(0, y - half):y + half, max(0, x - half):x + half] = 0
        return out

    def __repr__(self) -> str:
        return f"SquareCutout(length={self.length})"


class RandomRoll:
    """Shift (..., H, W) frames cyclically by a random whole number of pixels in [-max_shift, max_shift] on each axis."""

    def __init__(self, max_shift: int = 5):
        self.max_shift = max_shift

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        shifts = (_randint(-self.max_shift, self.max_shift), _randint(-self.max_shift, self.max_shift))
        return torch.roll(frames, shifts=shifts, dims=(-2, -1))

    def __repr__(self) -> str:
        return f"RandomRoll(max_shift={self.max_shift})"


class RandomShift:
    """Translate (..., H, W) frames by a random whole number of pixels in [-max_shift, max_shift] per axis, zero-filled.

    Unlike `RandomRoll` nothing wraps around: what leaves one border does not
    come back at the other (a stroke at the edge of a digit stays one stroke).
    """

    def __init__(self, max_shift: int):
        self.max_shift = max_shift

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        dy, dx = _randint(-self.max_shift, self.max_shift), _randint(-self.max_shift, self.max_shift)
        height, width = frames.shape[-2:]
        out = torch.zeros_like(frames)
        out[..., max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            frames[..., max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
        return out

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"


class OneOf:
    """Apply one of the given transforms, chosen uniformly.

    torchvision's RandomChoice draws from Python's `random`, which the
    per-sample torch seeding in eidsl.data.datasets would not control.
    """

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, x):
        return self.transforms[_randint(0, len(self.transforms) - 1)](x)

    def __repr__(self) -> str:
        return f"OneOf({self.transforms!r})"
