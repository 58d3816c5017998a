"""What bench and profile time a model on: the Fashion-MNIST test images for (28, 28, 1) image
classifiers (so the figures are those of real images), a user's .npy array (--input), or seeded
random inputs of the model's declared shape and dtype, as LiteRT's benchmark_model feeds one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import IMAGE_SHAPE, data
from ..errors import InputError
from .images import load_array
from .runtime import Model


def bench_images(count: int) -> np.ndarray:
    """`count` real test images when Fashion-MNIST is present, else seeded random pixels."""
    directory = data.default_dir()
    if directory is not None:
        images = data.read_idx_split(directory, "test").images[:count]
    else:
        images = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    return np.resize(images, (count, 28, 28))  # repeats when count > available


def bench_input(model: Model, count: int, array: Path | None = None, shape: tuple | None = None) -> np.ndarray:
    """`count` inputs for `model`, ready for `model.run` (rows of `array` repeat when it has fewer);
    `shape`: the dimensions after the batch, for a model that leaves some open."""
    if array is not None:
        if len(model.inputs) > 1:
            raise InputError(f"{model.name}: {len(model.inputs)} inputs; --input FILE.npy is for a model of one "
                             f"input (without it, each input gets seeded random values)")
        x = _checked(model, load_array(Path(array)), Path(array))
    elif _fashion_shaped(model) and not shape:
        x = model.prepare(bench_images(count))
    else:
        x = model.example_input(count, shape=shape)
    if isinstance(x, tuple):  # one array per input
        return tuple(np.resize(a, (count, *a.shape[1:])) for a in x)
    return np.resize(x, (count, *x.shape[1:]))


def rows(feed, count: int):
    """The first `count` rows of a feed: one array, or a tuple of them (several inputs)."""
    return tuple(a[:count] for a in feed) if isinstance(feed, tuple) else feed[:count]


def describe(model: Model, array: Path | None = None, shape: tuple | None = None) -> str:
    if array is not None:
        return Path(array).name
    if len(model.inputs) > 1:
        return "random " + "; ".join(f"{t.name} {t.dtype} {list(t.shape[1:])}" for t in model.inputs) + ", seed 0"
    if shape or not _fashion_shaped(model):
        return f"random {model.input.dtype} {list(shape or model.input.shape[1:])}, seed 0"
    return "Fashion-MNIST test images" if data.default_dir() is not None else "random pixels, seed 0"


def _fashion_shaped(model: Model) -> bool:
    return model.is_image_classifier and model.image_shape == IMAGE_SHAPE


def _checked(model: Model, x: np.ndarray, path: Path) -> np.ndarray:
    """The user's array as the model's input: its own shape and dtype, or uint8 pixels (N, H, W[, C])
    of an image classifier's images."""
    if model.is_image_classifier and x.dtype == np.uint8 and x.ndim in (3, 4) and \
            x.shape[1:3] == model.image_shape[:2] and (x.ndim == 3 or x.shape[3] in (1, 3)):
        x = model.prepare(x)
    expected = tuple(model.input.shape[1:])
    fits = x.ndim == len(expected) + 1 and len(x) > 0 and all(e < 1 or a == e for a, e in zip(x.shape[1:], expected))
    if not fits or x.dtype != np.dtype(model.input.dtype):
        shown = ", ".join("?" if e < 1 else str(e) for e in expected)
        raise InputError(f"{path}: {x.dtype} {x.shape}, expected {model.input.dtype} (N, {shown}): the input of "
                         f"{model.name}")
    return x
