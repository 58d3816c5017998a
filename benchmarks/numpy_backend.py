#!/usr/bin/env python3
"""The numpy backend against LiteRT: exactness on the whole test set, and latency.

1. Differing int8 output values, numpy backend vs LiteRT's reference kernels (BUILTIN_REF), on the
   10,000 Fashion-MNIST test images, for the seed CNN and the ops model (tests/fixtures/ops).
2. Per-image latency at batch 1 and 64, one thread: numpy backend, LiteRT fast kernels (XNNPACK),
   LiteRT reference kernels. Medians of at least --min-time seconds each, after warm-up.
3. The numpy backend's time per operator at batch 1 on the seed CNN (median of --op-runs runs).
4. The floor of a float32-BLAS backend: the model's MACs at this CPU's float32 peak (one core), against
   XNNPACK's int8 at batch 64 (the numpy backend's products are float32 sums of integers).

  python benchmarks/numpy_backend.py [--seed-model runs/demo/export/model_int8.tflite] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgefashion import cpu, data  # noqa: E402
from edgefashion.device import macs  # noqa: E402
from edgefashion.device.profile import profile  # noqa: E402
from edgefashion.device.runtime import Model  # noqa: E402
from edgefashion.render import table  # noqa: E402


def differing(path: Path, images: np.ndarray) -> dict:
    ours, reference = Model(path, backend="numpy"), Model(path, kernels="reference")
    a = np.concatenate([ours.run(ours.prepare(images[i:i + 500])) for i in range(0, len(images), 500)])
    b = np.concatenate([reference.run(reference.prepare(images[i:i + 500])) for i in range(0, len(images), 500)])
    delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"model": path.name, "images": len(images), "values": int(delta.size),
            "differing": int((delta > 0).sum()), "max_diff": float(delta.max())}


def per_image_us(model: Model, images: np.ndarray, batch: int, min_time: float) -> float:
    x = model.prepare(images[:batch])
    for _ in range(3):
        model.run(x)
    times, deadline = [], time.perf_counter() + min_time
    while time.perf_counter() < deadline or len(times) < 10:
        t0 = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6 / batch


def float32_floor(path: Path, features: dict, fast_us: float) -> str | None:
    """What float32 BLAS at 100 % of this core's float32 peak would take per image, against XNNPACK."""
    work, peak = macs.file_macs(path), macs.peak_gmacs(features, "float32", 1)
    if not work or not peak:
        return None
    floor_us = work / peak["gmacs"] / 1e3
    return (f"float32 floor: {work / 1e6:.2f} M MAC at this core's float32 peak ({peak['gmacs']} GMAC/s: "
            f"{peak['per_cycle']} MAC/cycle x {peak['clock_ghz']} GHz, {peak['unit']}) = {floor_us:.1f} us/image, "
            f"{floor_us / fast_us:.2f}x XNNPACK's int8 at batch 64; within 3x of it needs "
            f"{floor_us / (3 * fast_us):.0%} of that peak, every copy and requantization included")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-model", type=Path, default=ROOT / "firmware_assets" / "model_int8.tflite")
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--op-runs", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    test = data.load(None, "test")
    ops = ROOT / "tests" / "fixtures" / "ops"
    exact = [differing(p, test.images) for p in (args.seed_model, ops / "model_ops_int8.tflite",
                                                 ops / "model_ops_int8_float_io.tflite")]
    print(f"numpy backend vs LiteRT reference kernels, {len(test)} test images:")
    print(table(exact))
    rows = []
    for label, model in (("numpy backend", Model(args.seed_model, backend="numpy")),
                         ("LiteRT fast kernels", Model(args.seed_model)),
                         ("LiteRT reference kernels", Model(args.seed_model, kernels="reference"))):
        row = {"runtime": label}
        for batch in (1, 64):
            row[f"batch {batch} us/image"] = round(per_image_us(model, test.images, batch, args.min_time), 1)
        rows.append(row)
    info = cpu.describe()
    print(f"\nlatency of {args.seed_model.name}, 1 thread, median per image ({info.model}, int8 path {info.int8_path}):")
    print(table(rows))
    numpy_row, fast, reference = rows
    print(f"numpy vs reference at batch 1: {reference['batch 1 us/image'] / numpy_row['batch 1 us/image']:.2f}x faster; "
          f"numpy vs fast at batch 64: {numpy_row['batch 64 us/image'] / fast['batch 64 us/image']:.2f}x slower")
    per_op = profile(args.seed_model, args.op_runs, backend="numpy")  # what bench --profile --backend numpy prints
    op_rows = [{"operator": op["type"], "µs": op["us"], "M MAC": op["macs"] and round(op["macs"] / 1e6, 3)}
               for op in per_op["ops"]]
    print(f"\nnumpy backend per operator, batch 1, {per_op['method']} (operators that follow from the "
          f"input shape alone run once per shape, so they are not listed): total {per_op['total_us']:.0f} µs")
    print(table(op_rows))
    floor = float32_floor(args.seed_model, info.features, fast["batch 64 us/image"])
    if floor:
        print(floor)
    if args.json:
        args.json.write_text(json.dumps({"exact": exact, "latency": rows, "per_op": op_rows, "cpu": info.model}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
