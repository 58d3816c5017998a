#!/usr/bin/env python3
"""Cold start on the device path: a fresh `python -c` that loads a model and predicts one image.
Reports median wall time and peak RSS (from wait4) over N runs, beside `import tensorflow`."""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREDICT = ("import numpy as np; from edgefashion.device.runtime import Model; "
           "print(Model({path!r}).predict(np.zeros((28, 28), np.uint8)).labels[0])")


def measure(code: str) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {code}")
    return elapsed, usage.ru_maxrss / 1024


def report(label: str, code: str, runs: int) -> None:
    samples = [measure(code) for _ in range(runs)]
    wall = statistics.median(s[0] for s in samples)
    rss = statistics.median(s[1] for s in samples)
    print(f"{label:<40} median {wall:.3f} s, peak RSS {rss:.0f} MB  ({runs} runs)")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="e.g. runs/demo/export/model_int8.tflite")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--with-tensorflow", action="store_true", help="also time `import tensorflow`")
    args = parser.parse_args()
    report("python -c pass", "pass", args.runs)
    report(f"load {args.model.name} + predict 1 image", PREDICT.format(path=str(args.model.resolve())), args.runs)
    if args.with_tensorflow:
        report("import tensorflow", "import tensorflow", min(args.runs, 3))


if __name__ == "__main__":
    main()
