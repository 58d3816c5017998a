"""Inputs for `predict`: seed-format CSV (with or without labels), PNG/JPEG images, or .npy arrays,
as images of the model's size and channels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import data
from ..data import open_image
from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load_inputs(paths, shape: tuple = (28, 28, 1)) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(uint8 images (N, H, W[, C]) of `shape` (H, W, C), labels or None, a name per image) from one
    or more paths. Photos for a grey model are drawn as Fashion-MNIST draws its products (a light
    object centred on black); for an RGB model they are resized whole."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].suffix.lower() == ".csv":
        dataset = data.read_csv(paths[0], require_labels=False, image_shape=shape)
        return dataset.images, dataset.labels, [f"{paths[0].name}:{i + 2}" for i in range(len(dataset))]
    if len(paths) == 1 and paths[0].suffix.lower() == ".npy":
        images = _load_npy(paths[0], shape)
        return images, None, [f"{paths[0].name}[{i}]" for i in range(len(images))]
    for p in paths:
        if p.suffix.lower() in (".csv", ".npy"):
            raise InputError(f"{p}: a {p.suffix} cannot be mixed with other inputs; give one .csv, one .npy, "
                             f"or any number of images")
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{p}: expected one .csv, one .npy, or image files ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack([load_image(p, shape, fashion=shape[2] == 1) for p in paths]), None, [p.name for p in paths]


MAX_NPY_BYTES = 1 << 30  # 1 GB of images is ~1.3 M Fashion-MNIST images: more is a mistake or an attack


def _load_npy(path: Path, shape: tuple) -> np.ndarray:
    """(N, H, W), (N, H, W, C), (N, H*W*C) or one image, as (N, H, W[, C])."""
    h, w, c = shape
    one = (h, w) if c == 1 else (h, w, c)
    array = load_array(path)
    if array.ndim == 2 and array.shape[1] == h * w * c:
        array = array.reshape(-1, *one)
    elif array.shape in ((h, w), (h, w, c)):
        array = array.reshape(1, *one)
    elif array.ndim == 4 and array.shape[1:] == (h, w, c):
        array = array.reshape(-1, *one)
    elif not (array.ndim == 3 and array.shape[1:] == (h, w) and c == 1):
        raise InputError(f"{path}: array shape {array.shape}, expected (N, {h}, {w}{', ' + str(c) if c > 1 else ''}), "
                         f"(N, {h}, {w}, {c}) or (N, {h * w * c}): the images the model takes")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f" and np.isfinite(array).all() and 0 <= array.min() and array.max() <= 1:
        return np.round(array * 255).astype(np.uint8)
    raise InputError(f"{path}: dtype {array.dtype}, expected uint8 pixels 0-255 or floats in [0, 1]")


def load_array(path: Path) -> np.ndarray:
    """Any .npy array (no pickles), its header checked against the file and the budget first."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    _check_npy_header(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None


def _check_npy_header(path: Path) -> None:
    """Read only the header: the array it announces must fit the file and the budget."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"npy format version {version}")
            shape, _, dtype = read_header(f, max_header_size=10_000)
            body = path.stat().st_size - f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({str(exc)[:120]})") from None
    announced = math.prod(shape) * dtype.itemsize
    if dtype.hasobject or announced > MAX_NPY_BYTES or announced > body:
        raise InputError(f"{path}: header announces {shape} {dtype} ({announced} bytes), but the file holds "
                         f"{body} bytes (limit {MAX_NPY_BYTES // 2**20} MB)")


def load_image(path: Path, shape: tuple = (28, 28, 1), fashion: bool = True) -> np.ndarray:
    """A photo as the model's input image (H, W[, C]) uint8. `fashion`: as Fashion-MNIST draws its
    products (grey, light object on black, centred); else resized to the whole image, grey or RGB."""
    img = open_image(path)
    h, w, c = shape
    if fashion:
        return to_fashion_mnist(np.asarray(img.convert("L"), dtype=np.float32), (h, w))
    pixels = np.asarray(img.convert("RGB" if c == 3 else "L").resize((w, h)), dtype=np.uint8)
    return pixels


def to_fashion_mnist(pixels: np.ndarray, size: tuple = (28, 28)) -> np.ndarray:
    """A grayscale photo as Fashion-MNIST draws its products: the background (the median of the
    border) black, the garment light, cropped to its bounding box, scaled so its longer side is 28
    pixels (of `size`), centred on a black 28x28 canvas."""
    from PIL import Image  # load_image has checked that Pillow is installed

    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = float(np.median(border))
    if background > 127:  # a dark garment on a light background: Fashion-MNIST is the negative
        pixels, background = 255.0 - pixels, 255.0 - background
    spread = float(np.percentile(np.abs(border - np.median(border)), 90))  # texture of the background
    garment = np.clip(pixels - background - spread, 0, None)
    if garment.max() <= 0:
        garment = pixels  # nothing stands out: keep the photo as it is
    garment = garment * (255.0 / max(float(garment.max()), 1.0))
    rows, cols = np.nonzero(garment > 0.1 * 255)
    if rows.size:
        garment = garment[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    crop = Image.fromarray(np.round(garment).astype(np.uint8))
    h, w = size
    scale = min(w / crop.width, h / crop.height)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                       Image.Resampling.LANCZOS)
    canvas = Image.new("L", (w, h), 0)
    canvas.paste(crop, ((w - crop.width) // 2, (h - crop.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)
