"""Settings tuned for one budget or data set, used with another: adapt them, or refuse loudly.

A spec's train block is tuned for its own run (mlp.ei: 2 warm-up epochs of 10, 2-pixel shifts
of 28x28 digits). When the command line shortens the run or swaps the data, those settings can
stop making sense: a warm-up as long as the run never reaches the peak learning rate, and a
2-pixel shift is a quarter of an 8x8 digit. The rule (docs/training.md, "Short runs and small
images"):

- a setting that came from an earlier source than the one that changed the budget or the data
  (the spec's train block, then --epochs or --data on the command line) is adapted, and the
  run says so (a `note:` line, and `adapted` in config.json);
- a setting given together with, or after, the budget or data it contradicts was asked for as
  it is: it is refused with the fix.
"""
from __future__ import annotations

from typing import Any

DEFAULT_EPOCHS = 20
DEFAULT_DATA = "mnist5k"
# A shift of a quarter of the image or more moves most of the content out of view (2 pixels of an
# 8x8 digit): refused when asked for.
SHIFT_LIMIT = 4
# The side of each data set's images, to carry a shift tuned for one data set over to another.
IMAGE_SIDE = {"mnist5k": 28, "mnist": 28, "digits": 8, "cifar10": 32, "cifar100": 32, "tinyimagenet": 32,
              "dvs-gesture": 48, "cifar10-dvs": 48}


def fit_warmup(cfg, layers: list[tuple[str, dict[str, Any]]], index: dict[str, int],
               origin: dict[str, str], refuse) -> list[str]:
    """Shrink an inherited warm-up that is not shorter than the run; refuse one the user set so."""
    warm, epochs = cfg.warmup_epochs, cfg.epochs
    if warm == 0 or warm < epochs:
        return []
    w_at, e_at = index.get("warmup_epochs"), index.get("epochs")
    where_e = f" (from {origin['epochs']})" if "epochs" in origin else " (the default)"
    if e_at is None or w_at is None or w_at >= e_at:
        refuse("warmup_epochs", f"the warm-up is not shorter than the run (epochs = {epochs}{where_e}), so the "
                                f"learning rate would never reach its peak; give a warm-up below {epochs} epochs")
    # The run length the warm-up was chosen for: epochs as merged up to the warm-up's own source.
    tuned_for = _as_of(layers, w_at, "epochs", DEFAULT_EPOCHS)
    share = warm / tuned_for
    if share >= 1:
        refuse("warmup_epochs", f"the warm-up is not shorter than the run it was set for ({tuned_for} epochs)")
    cfg.warmup_epochs = round(share * epochs, 3)
    return [f"warm-up {cfg.warmup_epochs:g} epochs instead of {warm:g}: {origin['warmup_epochs']} sets {warm:g} "
            f"of {tuned_for} epochs, and {origin['epochs']} makes the run {epochs} epoch{'s' * (epochs != 1)}; "
            f"the warm-up keeps its share ({100 * share:.0f}%) of the run"]


def fit_shift(cfg, info, layers: list[tuple[str, dict[str, Any]]], refuse) -> list[str]:
    """Scale an inherited random shift down to the image it now moves; refuse one the user set too large."""
    if not cfg.augment or cfg.shift == 0:
        return []
    side = min(info.input_shape[-2:])
    size = "x".join(map(str, info.input_shape[-2:]))
    index, origin = cfg._index, cfg._origin
    s_at, d_at = index.get("shift"), index.get("data")
    if s_at is not None and d_at is not None and d_at > s_at:
        # The data changed after the shift was chosen: the shift keeps its share of the image.
        tuned_data = _as_of(layers, s_at, "data", DEFAULT_DATA)
        tuned_side = IMAGE_SIDE.get(tuned_data)
        if tuned_side is not None and tuned_data != info.name:
            fitted = min(cfg.shift, cfg.shift * side // tuned_side)
            if fitted != cfg.shift:
                shift, cfg.shift = cfg.shift, fitted
                return [f"shift {fitted} pixel{'s' * (fitted != 1)} instead of {shift}: {origin['shift']} sets "
                        f"{shift} for {tuned_side}x{tuned_side} {tuned_data} images, {origin['data']} chose "
                        f"{info.name} ({size} pixels); the shift keeps its share of the image"
                        + (" (none)" if fitted == 0 else "")]
    if SHIFT_LIMIT * cfg.shift >= side:
        refuse("shift", f"a {info.name} image is {size} pixels: a shift of a quarter of it or more moves most "
                        f"of it out of view; use at most {(side - 1) // SHIFT_LIMIT}")
    return []


def _as_of(layers, upto: int, key: str, default):
    """A setting's value as merged from the first `upto` + 1 sources."""
    value = default
    for _, settings in layers[:upto + 1]:
        if settings.get(key) is not None:
            value = settings[key]
    return value
