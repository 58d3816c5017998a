"""Is an input like the training images? A principal-component model of the training pixels, made at
export (export/ood.npz, carried in the bundle) and applied by predict, numpy only.

Two scores per image, each against its 99.5th percentile on training images the model was not
fitted on: the Mahalanobis distance of seven image statistics (brightness, share of lit pixels,
contrast, edge energy, left-right symmetry, where the mass sits) from the training images' (a photo
drawn small and dark, a texture, a lopsided scene), and the reconstruction error in the training
pixels' 32 main directions (what those directions cannot explain: noise, a screenshot). An image over
either is flagged. Pixels, not the model's features: it works the same for every model and runtime,
and needs no second graph. Measured: benchmarks/ood.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..errors import InputError

FILE = "ood.npz"
COMPONENTS = 32
QUANTILE = 0.995     # of held-out training images under each threshold: about 1 % flagged by one or the other
MAX_PIXELS = 4096    # larger images are subsampled on a grid first: the model stays small on a device
FIT_ROWS = 6000
MIN_IMAGES = 200
KEYS = ("mean", "components", "stats_mean", "stats_inverse", "stride", "shape", "thresholds")


def _flat(images: np.ndarray, stride: int) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    return images[:, ::stride, ::stride, :].reshape(len(images), -1).astype(np.float32) / 255.0


def _stride(shape) -> int:
    h, w, c = shape
    stride = 1
    while (-(-h // stride)) * (-(-w // stride)) * c > MAX_PIXELS:
        stride += 1
    return stride


def fit(images: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The model of `images` (N, H, W[, C] uint8 training images): components fitted on half of
    them, thresholds set on the other half."""
    images = np.asarray(images)
    if len(images) < MIN_IMAGES:
        raise InputError(f"{len(images)} training images: too few to tell unusual inputs from usual ones "
                         f"({MIN_IMAGES} or more)")
    shape = images.shape[1:] if images.ndim == 4 else (*images.shape[1:], 1)
    stride = _stride(shape)
    order = np.random.default_rng(seed).permutation(len(images))
    half = len(order) // 2
    fit_rows = _flat(images[order[:half][:FIT_ROWS]], stride)
    mean = fit_rows.mean(axis=0)
    _, _, vt = np.linalg.svd(fit_rows - mean, full_matrices=False)
    k = min(COMPONENTS, vt.shape[0])
    stats = statistics(images[order[:half][:FIT_ROWS]])
    model = {"mean": mean, "components": vt[:k].astype(np.float32),
             "stats_mean": stats.mean(axis=0), "stats_inverse": np.linalg.pinv(np.cov(stats.T)).astype(np.float32),
             "stride": np.int64(stride), "shape": np.asarray(shape, dtype=np.int64)}
    residual, distance = scores(model, images[order[half:]][:FIT_ROWS])
    model["thresholds"] = np.asarray([np.quantile(residual, QUANTILE), np.quantile(distance, QUANTILE)],
                                     dtype=np.float32)
    return model


def statistics(images: np.ndarray) -> np.ndarray:
    """Seven numbers per image (N, H, W[, C] uint8), on its grey version: log brightness, share of lit
    pixels, contrast, edge energy and asymmetry (each relative to brightness), centre of mass x and y."""
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim == 4:
        x = x.mean(axis=3)
    h, w = x.shape[1:]
    mean = x.mean(axis=(1, 2)) + 1e-3
    edges = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2)) + np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))
    asymmetry = np.abs(x - x[:, :, ::-1]).mean(axis=(1, 2))
    mass = x.sum(axis=(1, 2)) + 1e-3
    cx = (x.sum(axis=1) * np.arange(w)).sum(axis=1) / mass / w - 0.5
    cy = (x.sum(axis=2) * np.arange(h)).sum(axis=1) / mass / h - 0.5
    return np.stack([np.log(mean), (x > 0.1).mean(axis=(1, 2)), x.std(axis=(1, 2)) / mean, edges / mean,
                     asymmetry / mean, cx, cy], axis=1)


def scores(model: dict, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction error in the components, Mahalanobis distance of the statistics) of each image."""
    x = _flat(images, int(model["stride"])) - model["mean"]
    coef = x @ model["components"].T
    residual = np.sqrt(np.maximum((x * x).sum(axis=1) - (coef * coef).sum(axis=1), 0))
    s = statistics(images) - model["stats_mean"]
    distance = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", s, model["stats_inverse"], s), 0))
    return residual, distance


def unusual(model: dict, images: np.ndarray) -> np.ndarray:
    """True for each image over either threshold: unlike every training image."""
    residual, distance = scores(model, images)
    limit = model["thresholds"]
    return (residual > limit[0]) | (distance > limit[1])


def to_bytes(model: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **model)
    return buffer.getvalue()


def load(path: Path, image_shape) -> dict | None:
    """The model saved at `path`, or None where there is none or it is of other images (a file from
    an older export, a different shape): predict then just does not warn."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            model = {key: saved[key] for key in KEYS}
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: not an edgefashion out-of-distribution model ({exc})") from None
    if tuple(model["shape"]) != tuple(image_shape) or model["components"].shape[1] != model["mean"].shape[0]:
        return None
    return model
