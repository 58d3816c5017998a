#!/usr/bin/env python3
"""The out-of-distribution warning of `predict` on real data: fitted on the Fashion-MNIST training
images as export fits it, then the share flagged of (a) the Fashion-MNIST test images (the false-alarm
rate), (b) non-clothing photos (crops of scikit-learn's two bundled photographs, drawn as predict draws
any photo for a grey model), (c) handwritten digits (scikit-learn's bundled digits, upscaled to 28×28),
(d) uniform noise.

    python benchmarks/ood.py [--data /usr/share/datasets/fashion-mnist] [--crops 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgefashion import data  # noqa: E402
from edgefashion.device import ood  # noqa: E402
from edgefashion.device.images import load_inputs  # noqa: E402
from edgefashion.render import table  # noqa: E402


def photo_crops(count: int, folder: Path) -> np.ndarray:
    """`count` random square crops of the two photographs scikit-learn ships, saved as JPEG and read
    back through predict's own image path."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        photo = load_sample_images().images[i % 2]
        side = int(rng.integers(60, min(photo.shape[:2])))
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        path = folder / f"crop{i}.jpg"
        Image.fromarray(photo[y:y + side, x:x + side]).save(path)
        paths.append(path)
    return load_inputs(paths)[0]


def digits() -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_digits

    raw = load_digits().images  # 0..16, white digit on black, 8×8
    return np.stack([np.asarray(Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((28, 28))) for d in raw])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--crops", type=int, default=200)
    args = parser.parse_args()
    train = data.read_idx_split(args.data, "train")
    test = data.read_idx_split(args.data, "test")
    started = time.monotonic()
    model = ood.fit(train.images)
    fit_s = time.monotonic() - started
    with tempfile.TemporaryDirectory() as scratch:
        photos = photo_crops(args.crops, Path(scratch))
    noise = np.random.default_rng(1).integers(0, 256, (500, 28, 28), dtype=np.uint8)
    rows = []
    for name, images in (("Fashion-MNIST test (false alarms)", test.images), ("photo crops (not clothing)", photos),
                         ("handwritten digits", digits()), ("uniform noise", noise)):
        flagged = ood.unusual(model, images)
        rows.append({"images": name, "count": len(images), "flagged": int(flagged.sum()),
                     "share": round(float(flagged.mean()), 4)})
    print(table(rows))
    times = []
    for i in range(200):
        started = time.perf_counter()
        ood.unusual(model, test.images[i:i + 1])
        times.append(time.perf_counter() - started)
    print(f"fit {fit_s:.1f} s on {len(train)} training images; model {len(ood.to_bytes(model)) / 1024:.0f} KB; "
          f"one image scored in {np.median(times) * 1e6:.0f} µs (median of 200)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
