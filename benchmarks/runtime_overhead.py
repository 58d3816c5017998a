#!/usr/bin/env python3
"""Per-call overhead of Model.predict vs a bare set_tensor/invoke/get_tensor loop on the same
interpreter (batch 1, 1 thread). The two alternate call by call (order flipped every pair) so
machine noise hits both alike; prints medians, their ratio and the median paired difference."""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgefashion.device.runtime import Model  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="e.g. runs/demo/export/model_int8.tflite")
    parser.add_argument("--pairs", type=int, default=20000, help="bare/predict call pairs")
    args = parser.parse_args()

    model = Model(args.model, threads=1)
    interpreter = model._runner.interpreter  # the very same interpreter, driven by hand
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    prepared = model.prepare(image)

    def bare():
        interpreter.set_tensor(inp, prepared)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    def ours():
        return model.predict(image)

    assert np.array_equal(model.dequantize(bare()), ours().probabilities)
    print(f"{args.model.name} ({model.format}, {model.backend}), batch 1, 1 thread, {args.pairs} alternating pairs")
    def run_prepared():
        return model.run(prepared)

    for fn in (bare, ours, run_prepared):
        per_call_us(fn, 500)  # warm-up
    for label, fn in (("Model.predict (uint8 in, labels out)", ours), ("Model.run (prepared int8 in)", run_prepared)):
        bare_t, ours_t = paired(bare, fn, args.pairs)
        b, o = statistics.median(bare_t), statistics.median(ours_t)
        diff = statistics.median(x - y for x, y in zip(ours_t, bare_t))
        print(f"{label}: median {o:.1f} us/call vs bare set_tensor/invoke/get_tensor {b:.1f} us/call: "
              f"ratio {o / b:.3f}, median paired difference {diff:+.1f} us ({diff / b * 100:+.1f}%)")


def paired(bare, fn, pairs: int) -> tuple[list, list]:
    """Alternate bare and fn call by call, flipping the order every pair; per-call µs."""
    clock = time.perf_counter_ns
    bare_t, fn_t = [], []
    for k in range(pairs):
        first, second = (bare, fn) if k % 2 else (fn, bare)
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        a, b = (t1 - t0) / 1e3, (t2 - t1) / 1e3
        bare_t.append(a if first is bare else b)
        fn_t.append(b if first is bare else a)
    return bare_t, fn_t


if __name__ == "__main__":
    main()
