#!/usr/bin/env python3
"""int8 models at batch 1, one thread, idle and under load: LiteRT's reference kernels, LiteRT's fast
kernels (XNNPACK), the numpy backend as shipped (BLAS held to --threads, 1), and the numpy backend
with the BLAS at its default thread count (as before it owned its threads). "Under load" is one busy
Python process per core for the whole measurement. Each cell is the median per-image latency of a
fresh process (so one BLAS setting never leaks into the next), measured --rounds times with the ways
in turn and the median of those shown, with the machine and date printed.

    python benchmarks/numpy_threads.py [MODEL.tflite ...] [--built] [--min-time 2] [--rounds 3] [--json out.json]

Default models: the seed CNN (firmware_assets/) and the committed ops and foreign fixtures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgefashion import cpu  # noqa: E402
from edgefashion.device import macs  # noqa: E402
from edgefashion.render import table  # noqa: E402

DEFAULT_MODELS = [ROOT / "firmware_assets" / "model_int8.tflite",
                  ROOT / "tests" / "fixtures" / "ops" / "model_ops_int8.tflite",
                  *sorted((ROOT / "tests" / "fixtures" / "foreign").glob("*int8*.tflite"))]
WAYS = {"reference": "LiteRT reference", "fast": "LiteRT fast (XNNPACK)", "numpy": "numpy, BLAS 1 thread",
        "numpy-blas-default": "numpy, BLAS default threads"}

MEASURE = r"""
import json, sys, time
import numpy as np
from edgefashion.device.runtime import Model
way, path, min_time = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = Model(path, backend="numpy" if way.startswith("numpy") else "auto",
              kernels="reference" if way == "reference" else "default", classifier=False)
run = model.run
if way == "numpy-blas-default":  # the interpreter itself, without the runner's BLAS limit
    run = model._runner.interpreter.run
spec = model.input
shape = [1 if d in (-1, None) else d for d in spec.shape]
shape[0] = 1
x = np.random.default_rng(0).integers(-128, 128, size=shape).astype(spec.dtype) if spec.dtype == "int8" \
    else np.random.default_rng(0).random(shape, dtype=np.float32)
for _ in range(5):
    run(x)
times, deadline = [], time.perf_counter() + min_time
while time.perf_counter() < deadline or len(times) < 20:
    t0 = time.perf_counter_ns(); run(x); times.append(time.perf_counter_ns() - t0)
print(json.dumps(float(np.median(times)) / 1e3))
"""


def measure(way: str, path: Path, min_time: float) -> float | None:
    done = subprocess.run([sys.executable, "-c", MEASURE, way, str(path), str(min_time)], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:  # said once: the way is not tried again on this model
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}, no message"])[-1]
        print(f"  {path.name} {way}: {why}", file=sys.stderr)
        return None
    return round(json.loads(done.stdout), 1)


@contextlib.contextmanager
def load(busy: bool):
    """One spinning process per core while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() if busy else 0)]
    try:
        time.sleep(0.5 if busy else 0)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure_all(models: list[Path], rounds: int, min_time: float) -> list[dict]:
    """A row per model and load: each way's median over `rounds` measurements taken in turn."""
    rows = []
    for path in models:
        work, failed = round((macs.file_macs(path) or 0) / 1e6, 3), set()
        for busy in (False, True):
            row = {"model": path.name, "M MAC": work, "machine": "loaded" if busy else "idle"}
            with load(busy):  # the ways in turn, `rounds` times: a slow minute of a shared machine hits all
                cells: dict[str, list] = {way: [] for way in WAYS}
                for _ in range(rounds):
                    for way in WAYS.keys() - failed:
                        cells[way].append(measure(way, path, min_time))
                        if cells[way][-1] is None:
                            failed.add(way)
            for way, label in WAYS.items():
                got = [v for v in cells[way] if v is not None]
                row[label] = round(float(np.median(got)), 1) if got else None
            ref, ours = row["LiteRT reference"], row["numpy, BLAS 1 thread"]
            row["numpy vs reference"] = round(ref / ours, 2) if ref and ours else None
            rows.append(row)
        print(f"{path.name}: done", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per cell (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per cell, interleaved; the median is shown")
    parser.add_argument("--built", action="store_true",
                        help="also the MobileNetV2-0.35 96x96x3 and DS-CNN keyword spotter that "
                             "benchmarks/foreign_models.py builds (random weights; needs TensorFlow)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for path in args.models:
        if not path.is_file():
            print(f"error: {path}: model not found", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="numpy-threads-") as scratch:  # the built models, removed after
        if args.built:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            import foreign_models
            args.models = [*args.models, *foreign_models.built_models(Path(scratch))]
        rows = measure_all(args.models, args.rounds, args.min_time)
    info = cpu.describe()
    print(f"{time.strftime('%Y-%m-%d')}, {info.model}, {os.cpu_count()} cores, int8 path {info.int8_path}; "
          f"µs per image (median) at batch 1, 1 interpreter thread; loaded = {os.cpu_count()} busy processes")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"cpu": info.model, "date": time.strftime("%Y-%m-%d"), "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
