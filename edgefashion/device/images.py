"""Inputs for `predict`: seed-format CSV (with or without labels), PNG/JPEG images, or .npy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import data
from ..errors import InputError, MissingDependency

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_inputs(paths) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(uint8 images (N, 28, 28), labels or None, a name per image) from one or more paths."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        dataset = data.read_csv(paths[0], require_labels=False)
        return dataset.images, dataset.labels, [f"{paths[0].name}:{i + 2}" for i in range(len(dataset))]
    if len(paths) == 1 and paths[0].suffix.lower() == ".npy":
        images = _load_npy(paths[0])
        return images, None, [f"{paths[0].name}[{i}]" for i in range(len(images))]
    for p in paths:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{p}: expected one .csv, one .npy, or image files ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack([load_image(p) for p in paths]), None, [p.name for p in paths]


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    if array.ndim == 2 and array.shape[1] == data.PIXELS:
        array = array.reshape(-1, 28, 28)
    elif array.shape in ((28, 28), (28, 28, 1)):
        array = array.reshape(1, 28, 28)
    elif array.ndim == 4 and array.shape[1:] == (28, 28, 1):
        array = array.reshape(-1, 28, 28)
    elif not (array.ndim == 3 and array.shape[1:] == (28, 28)):
        raise InputError(f"{path}: array shape {array.shape}, expected (N, 28, 28), (N, 28, 28, 1) or (N, 784)")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f" and np.isfinite(array).all() and 0 <= array.min() and array.max() <= 1:
        return np.round(array * 255).astype(np.uint8)
    raise InputError(f"{path}: dtype {array.dtype}, expected uint8 pixels 0-255 or floats in [0, 1]")


def load_image(path: Path) -> np.ndarray:
    """Any photo -> 28x28 uint8 as Fashion-MNIST: grayscale, light object on black, centred."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise MissingDependency("Pillow (for PNG/JPEG input)", "edge") from None
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            gray = ImageOps.exif_transpose(img).convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    pixels = np.asarray(gray)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:  # dark object on a light background: Fashion-MNIST is the negative
        gray = ImageOps.invert(gray)
    gray.thumbnail((28, 28), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (28, 28), 0)
    canvas.paste(gray, ((28 - gray.width) // 2, (28 - gray.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)
