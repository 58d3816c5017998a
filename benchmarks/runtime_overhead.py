#!/usr/bin/env python3
"""Per-call overhead of Model.predict vs a bare set_tensor/invoke/get_tensor loop on the same
interpreter (batch 1, 1 thread). Interleaved blocks, medians; prints the ratio."""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgefashion.runtime import Model  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path, help="e.g. runs/demo/export/model_int8.tflite")
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="calls per block")
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
    for fn in (bare, ours):
        per_call_us(fn, 200)  # warm-up
    bare_t, ours_t = [], []
    for _ in range(args.blocks):
        bare_t.append(per_call_us(bare, args.calls))
        ours_t.append(per_call_us(ours, args.calls))
    b, o = statistics.median(bare_t), statistics.median(ours_t)
    print(f"{args.model.name} ({model.format}, {model.backend}), batch 1, 1 thread, "
          f"{args.blocks} interleaved blocks of {args.calls} calls")
    print(f"bare set_tensor/invoke/get_tensor: median {b:.1f} us/call")
    print(f"Model.predict (uint8 in, labels out): median {o:.1f} us/call")
    print(f"ratio {o / b:.3f} ({(o / b - 1) * 100:+.1f}% overhead)")


if __name__ == "__main__":
    main()
