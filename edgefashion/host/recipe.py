"""Training recipes beyond the seed's: a cosine learning-rate schedule and image augmentation.

The seed trains at a constant learning rate on the images as they are, and that stays the default
(the seed CNN's weights do not change). `--lr-schedule cosine` lowers the rate along half a cosine,
epoch by epoch, to a small fraction of it in the last epoch; `--augment shift` shows each training
image moved by up to two pixels each way, drawn anew every epoch (`shift+flip` also mirrors half of
them left to right: right for clothes, wrong for digits or text). Validation keeps the last share of
the rows untouched, as Keras' validation_split does, so the best epoch is chosen on real images.
"""

from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("constant", "cosine")
AUGMENTS = ("none", "shift", "shift+flip")
SHIFT = 2  # pixels each way


def cosine_factor(epoch: int, epochs: int) -> float:
    """The share of the initial learning rate in `epoch` (0-based) of `epochs`: 1 first, then down a
    half cosine, never 0 (the last epoch still learns)."""
    return 0.5 * (1 + math.cos(math.pi * epoch / epochs))


def shifted(images: np.ndarray, rng: np.random.Generator, flip: bool) -> np.ndarray:
    """(N, H, W, C) images each moved by a random (dy, dx) in [-SHIFT, SHIFT], the border filled with
    0 (the background after prepare), and with `flip` half of them mirrored."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT), (0, 0)))
    dy, dx = rng.integers(0, 2 * SHIFT + 1, n), rng.integers(0, 2 * SHIFT + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]           # (N, H)
    cols = dx[:, None] + np.arange(w)[None, :]           # (N, W)
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mirror = rng.random(n) < 0.5
        out[mirror] = out[mirror, :, ::-1]
    return out


def batches(keras, images: np.ndarray, targets: np.ndarray, batch_size: int, augment: str, seed: int):
    """A Keras dataset of shuffled mini-batches, augmented unless `augment` is none, new shifts every
    epoch (seeded)."""

    class Augmented(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(images))

        def __len__(self):
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index):
            pick = self.order[index * batch_size:(index + 1) * batch_size]
            x = images[pick]
            if augment != "none":
                x = shifted(x, self.rng, flip=augment == "shift+flip")
            return x, targets[pick]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(images))

    return Augmented()
