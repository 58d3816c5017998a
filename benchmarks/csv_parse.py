#!/usr/bin/env python3
"""CSV parse time: edgefashion.data.read_csv vs the seed's np.loadtxt, median of N runs."""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgefashion import data  # noqa: E402


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("csv", type=Path, help="a CSV in the seed's format (e.g. fashion-mnist_train.csv)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ours, ds = timed(lambda: data.read_csv(args.csv), args.repeats)
    seed, raw = timed(lambda: np.loadtxt(args.csv, skiprows=1, delimiter=","), args.repeats)
    assert np.array_equal(raw[:, 0].astype(np.uint8), ds.labels)
    assert np.array_equal(raw[:, 1:].astype(np.uint8).reshape(-1, 28, 28), ds.images)
    print(f"{args.csv}: {len(ds)} rows, identical arrays")
    print(f"read_csv   median {ours:.2f} s")
    print(f"np.loadtxt median {seed:.2f} s  (read_csv takes {ours / seed:.2f}x the time)")


if __name__ == "__main__":
    main()
