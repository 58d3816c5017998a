#!/usr/bin/env python3
"""Which ONNX Runtime int8 settings give the same integers on every CPU?

Three steps, so the measuring one can run under emulation of other CPUs:

  make    RUN DIR   quantize RUN/export/model_f32.onnx with each candidate setting (RUN's calibration)
  measure DIR TAG   run every model in DIR on the first --images test images; save outputs (+ p50)
  report  DIR       per candidate: accuracy, agreement with float, p50, and per other path the
                    agreement and largest difference (in output quantization steps) with `native`

  python benchmarks/onnx_int8_settings.py make runs/demo runs/quant
  python benchmarks/onnx_int8_settings.py measure runs/quant native --latency
  qemu-x86_64-static -cpu Haswell .venv/bin/python benchmarks/onnx_int8_settings.py measure runs/quant haswell --images 1000
  python benchmarks/onnx_int8_settings.py report runs/quant
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edgefashion import data  # noqa: E402
from edgefashion.device.runtime import Model  # noqa: E402
from edgefashion.rundir import Run  # noqa: E402

CANDIDATES = {  # name: OnnxInt8Settings fields
    "s8s8": dict(activations="int8", weights="int8", reduce_range=False),
    "s8s8-rr": dict(activations="int8", weights="int8", reduce_range=True),
    "u8s8": dict(activations="uint8", weights="int8", reduce_range=False),
    "u8s8-rr": dict(activations="uint8", weights="int8", reduce_range=True),
    "u8u8": dict(activations="uint8", weights="uint8", reduce_range=False),
    "u8s8-rr-qop": dict(activations="uint8", weights="int8", reduce_range=True, quant_format="QOperator"),
}


def make(run: Path, out: Path) -> None:
    from edgefashion.host.export import ExportConfig, OnnxInt8Settings, onnx_output_quantization, calibration_set
    from edgefashion.files import read_json, write_bytes, write_json

    calib_info = read_json(run / "export" / "export.json")["calibration"]
    _, calib, _ = calibration_set(ExportConfig(calibration_count=calib_info["count"], seed=calib_info["seed"]), Run(run))
    f32 = run / "export" / "model_f32.onnx"
    write_bytes(out / "f32.onnx", f32.read_bytes())
    steps = {}
    for name, fields in CANDIDATES.items():
        started = time.monotonic()
        content = _quantize(f32, calib, OnnxInt8Settings(**fields))
        write_bytes(out / f"{name}.onnx", content)
        steps[name] = onnx_output_quantization(content)[0]
        print(f"{name}: {len(content)} bytes, {time.monotonic() - started:.1f} s", file=sys.stderr)
    write_json(out / "settings.json", {"candidates": CANDIDATES, "output_scale": steps,
                                       "calibration": calib_info})


def _quantize(f32, calib, settings):
    from edgefashion.console import quiet
    from edgefashion.host.export import quantize_onnx

    with quiet():
        return quantize_onnx(f32, calib, settings)


def measure(out: Path, tag: str, count: int, latency: bool) -> None:
    test = data.load(None, "test").subset(slice(0, count))
    outputs, timings = {}, {}
    for path in sorted(out.glob("*.onnx")):
        model = Model(path, threads=1)
        started = time.monotonic()
        outputs[path.stem] = model.predict_proba(test.images, batch_size=100)
        if latency:
            timings[path.stem] = _p50_us(model, test.images)
        print(f"{tag} {path.stem}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    np.savez(out / f"outputs-{tag}.npz", labels=test.labels, **outputs)
    if latency:
        (out / f"latency-{tag}.json").write_text(json.dumps(timings, indent=1))


def _p50_us(model: Model, images: np.ndarray, runs: int = 2000) -> float:
    x = [model.prepare(images[i % len(images)]) for i in range(64)]
    for i in range(50):
        model.run(x[i % 64])
    times = []
    for i in range(runs):
        t0 = time.perf_counter_ns()
        model.run(x[i % 64])
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times) / 1e3)


def report(out: Path) -> None:
    settings = json.loads((out / "settings.json").read_text())
    native = np.load(out / "outputs-native.npz")
    labels = native["labels"]
    latency_file = out / "latency-native.json"
    latency = json.loads(latency_file.read_text()) if latency_file.is_file() else {}
    others = {p.stem.removeprefix("outputs-"): np.load(p) for p in sorted(out.glob("outputs-*.npz"))
              if p.stem != "outputs-native"}
    header = ["model", "accuracy", "agreement with float", "p50 us (native, batch 1)"]
    header += [f"{tag}: same top-1 / max diff (steps) / values differing vs native" for tag in others]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in ["f32", *settings["candidates"]]:
        probs = native[name]
        row = [name, f"{(probs.argmax(1) == labels).mean():.4f}",
               "-" if name == "f32" else f"{(probs.argmax(1) == native['f32'].argmax(1)).mean():.2%}",
               f"{latency[name]:.0f}" if name in latency else "-"]
        step = settings["output_scale"].get(name) or 1.0
        for tag, there in others.items():
            n = len(there["labels"])
            a, b = there[name], probs[:n]
            diff = np.abs(a.astype(np.float64) - b) / step
            row.append(f"{(a.argmax(1) == b.argmax(1)).mean():.2%} / {diff.max():.2f} / {int((diff > 1e-3).sum())}"
                       f" of {diff.size}")
        print("| " + " | ".join(row) + " |")
    print(f"\n{len(labels)} test images natively; " +
          ", ".join(f"{tag}: {len(o['labels'])}" for tag, o in others.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("make")
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("measure")
    p.add_argument("out", type=Path)
    p.add_argument("tag")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--latency", action="store_true", help="also time batch 1, 1 thread (native only)")
    p = sub.add_parser("report")
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.step == "make":
        make(args.run, args.out)
    elif args.step == "measure":
        measure(args.out, args.tag, args.images, args.latency)
    else:
        report(args.out)


if __name__ == "__main__":
    main()
