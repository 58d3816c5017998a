#!/usr/bin/env python3
"""Write Fashion-MNIST IDX files out in the seed's CSV format (header, label, 784 pixels)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import data  # noqa: E402
from edgefashion.errors import InputError  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idx-dir", type=Path, default=None,
                        help="folder with the four IDX .gz files (default: the local Fashion-MNIST)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the CSV files")
    parser.add_argument("--split", choices=["train", "test", "both"], default="both")
    args = parser.parse_args(argv)
    try:
        directory = args.idx_dir or data.default_dir()
        if directory is None:
            raise InputError("Fashion-MNIST IDX files not found; pass --idx-dir")
        for split in (["train", "test"] if args.split == "both" else [args.split]):
            dataset = data.read_idx_split(directory, split)
            out = data.write_csv(dataset, args.out / f"fashion-mnist_{split}.csv")
            print(f"{out}: {len(dataset)} rows")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
