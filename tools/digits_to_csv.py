#!/usr/bin/env python3
"""Write scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes, UCI's optdigits
test set) in the seed's CSV layout: header, label, 64 pixels 0-255 (the 0-16 grey levels scaled by
255/16), and a labels.txt beside it. Needs scikit-learn (the dev extra); reads no network.

    python tools/digits_to_csv.py --out DIR      # DIR/digits.csv, DIR/labels.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import data  # noqa: E402
from edgefashion.files import write_text  # noqa: E402

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digits() -> data.Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    return data.Dataset(images, bunch.target.astype(np.uint8), "sklearn.datasets.load_digits", "", NAMES)


def write(out: Path) -> Path:
    """DIR/digits.csv and DIR/labels.txt; returns the CSV's path."""
    out.mkdir(parents=True, exist_ok=True)
    csv = data.write_csv(digits(), out / "digits.csv")
    write_text(out / data.LABELS_FILE, "\n".join(NAMES) + "\n")
    return csv


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for digits.csv and labels.txt")
    args = parser.parse_args(argv)
    taken = [p for p in (args.out / "digits.csv", args.out / data.LABELS_FILE) if p.exists()]
    if taken:
        print(f"error: {taken[0]}: exists; refusing to overwrite it (choose another --out)", file=sys.stderr)
        return 2
    csv = write(args.out)
    print(f"{csv}: {len(digits())} rows, 8x8 grey, 10 classes; class names in {args.out / data.LABELS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
