"""Inputs for `predict`: seed-format CSV (with or without labels), PNG/JPEG images, or .npy arrays."""

from __future__ import annotations

import math
import warnings
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
        if p.suffix.lower() in (".csv", ".npy"):
            raise InputError(f"{p}: a {p.suffix} cannot be mixed with other inputs; give one .csv, one .npy, "
                             f"or any number of images")
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{p}: expected one .csv, one .npy, or image files ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack([load_image(p) for p in paths]), None, [p.name for p in paths]


MAX_NPY_BYTES = 1 << 30  # 1 GB of images is ~1.3 M Fashion-MNIST images: more is a mistake or an attack
MAX_IMAGE_PIXELS = 50_000_000  # a 50 Mpx photo is plenty; Pillow's own limit is 178 Mpx


def _load_npy(path: Path) -> np.ndarray:
    array = load_array(path)
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


def load_image(path: Path) -> np.ndarray:
    """Any photo -> 28x28 uint8 as Fashion-MNIST: grayscale, light object on black, centred."""
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise MissingDependency("Pillow (for PNG/JPEG input)", "edge") from None
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with warnings.catch_warnings(), Image.open(path) as img:
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # an error, not a 2-line warning
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InputError(f"{path}: {img.width}x{img.height} pixels, more than the "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000} Mpx allowed; scale it down first")
            gray = ImageOps.exif_transpose(img).convert("L")
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image ({str(exc)[:160]})") from None
    return to_fashion_mnist(np.asarray(gray, dtype=np.float32))


def to_fashion_mnist(pixels: np.ndarray) -> np.ndarray:
    """A grayscale photo as Fashion-MNIST draws its products: the background (the median of the
    border) black, the garment light, cropped to its bounding box, scaled so its longer side is 28
    pixels, centred on a black 28x28 canvas."""
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
    scale = 28 / max(crop.width, crop.height)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                       Image.Resampling.LANCZOS)
    canvas = Image.new("L", (28, 28), 0)
    canvas.paste(crop, ((28 - crop.width) // 2, (28 - crop.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)
