#!/usr/bin/env python3
"""Write a colour image-folder data set of real photos: 32x32 patches of the sample photos that the
installed packages ship, one class per photo. Training patches come from the left 60 % of each photo,
test patches from the right 40 %, so no test pixel was ever seen in training.

    temple    scikit-learn's china.jpg   (sklearn.datasets.load_sample_images)
    flower    scikit-learn's flower.jpg
    portrait  matplotlib's grace_hopper.jpg (only where matplotlib is installed: the host extra)

    python tools/photo_patches.py --out DIR   # DIR/train/<class>/*.png, DIR/test/<class>/*.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

PATCH, SHORT_SIDE, CUT = 32, 160, 0.6
TRAIN_STRIDE, TEST_STRIDE = 8, 16


def photos() -> dict[str, Path]:
    """{class name: photo} of the sample photos installed here."""
    import sklearn

    images = Path(sklearn.__file__).parent / "datasets" / "images"
    found = {"temple": images / "china.jpg", "flower": images / "flower.jpg"}
    try:
        import matplotlib.cbook
        found["portrait"] = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except (ImportError, OSError):
        pass
    return found


def patches(photo: Path, split: str) -> list[np.ndarray]:
    from PIL import Image

    with Image.open(photo) as img:
        img = img.convert("RGB")
        scale = SHORT_SIDE / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        pixels = np.asarray(img)
    h, w, _ = pixels.shape
    cut = int(w * CUT)
    lo, hi, stride = (0, cut - PATCH, TRAIN_STRIDE) if split == "train" else (cut, w - PATCH, TEST_STRIDE)
    return [pixels[y:y + PATCH, x:x + PATCH] for y in range(0, h - PATCH + 1, stride)
            for x in range(lo, hi + 1, stride)]


def write(out: Path) -> dict[str, dict[str, int]]:
    """The data set in `out` (which must not exist yet); {split: {class: patches}}."""
    from PIL import Image

    counts = {}
    for split in ("train", "test"):
        counts[split] = {}
        for name, photo in photos().items():
            folder = out / split / name
            folder.mkdir(parents=True)
            found = patches(photo, split)
            for i, patch in enumerate(found):
                Image.fromarray(patch).save(folder / f"{name}_{i:04d}.png")
            counts[split][name] = len(found)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the data set")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out}: exists; choose a new folder", file=sys.stderr)
        return 2
    for split, per_class in write(args.out).items():
        print(f"{args.out / split}: " + ", ".join(f"{name} {n}" for name, n in per_class.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
