#!/usr/bin/env python3
"""Models edgefashion did not make, through bench, the numpy backend and TFLM's arena.

Builds MobileNetV2 (alpha 0.35, 96x96x3, weights=None) and a DS-CNN-style keyword spotter (49x10x1)
with random weights, quantized to full int8 with seeded random calibration; adds the foreign test
fixtures and the models the installed packages ship (TFLM's sine_float.tflite, ONNX Runtime's
logreg_iris.onnx). For each: input -> output, ops, p50 at batch 1 / 1 thread on the default interpreter
and on the numpy backend, whether the numpy backend is bit-exact with LiteRT's reference kernels (or
the op it refuses), and the TFLM arena. Needs the host extra.

    python benchmarks/foreign_models.py [--runs 200]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgefashion import cpu  # noqa: E402
from edgefashion.device.bench import BenchConfig, bench  # noqa: E402
from edgefashion.device.runtime import Model  # noqa: E402
from edgefashion.device.tflite_file import read as read_tflite  # noqa: E402
from edgefashion.errors import InputError  # noqa: E402
from edgefashion.files import write_bytes  # noqa: E402
from edgefashion.console import quiet  # noqa: E402
from edgefashion.host import import_tf  # noqa: E402
from edgefashion.host.export import tflite_converter  # noqa: E402
from edgefashion.render import markdown_table  # noqa: E402


def built_models(folder: Path) -> list[Path]:
    tf = import_tf()
    keras = tf.keras
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    layers = keras.layers
    mobilenet = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    kws = keras.Sequential([keras.Input((49, 10, 1)), layers.Conv2D(64, (10, 4), strides=2, padding="same"),
                            layers.BatchNormalization(), layers.ReLU(),
                            *[layer for _ in range(4) for layer in (
                                layers.DepthwiseConv2D(3, padding="same"), layers.BatchNormalization(), layers.ReLU(),
                                layers.Conv2D(64, 1), layers.BatchNormalization(), layers.ReLU())],
                            layers.GlobalAveragePooling2D(), layers.Dense(12, activation="softmax")], name="ds_cnn")
    out = []
    for name, model, shape in (("mobilenetv2_035_96_int8.tflite", mobilenet, (96, 96, 3)),
                               ("ds_cnn_kws_int8.tflite", kws, (49, 10, 1))):
        calibration = rng.random((50, *shape), dtype=np.float32)
        with quiet():  # the converter prints every captured tensor
            write_bytes(folder / name, bytes(tflite_converter(tf, model, calibration).convert()))
        out.append(folder / name)
    return out


def shipped_models() -> list[Path]:
    import onnxruntime
    import tflite_micro
    return [Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite",
            Path(onnxruntime.__file__).parent / "datasets" / "logreg_iris.onnx"]


SHAPES = {"nchw_dynamic_f32.onnx": [1, 28, 28]}  # open dimensions, given as --input-shape
BATCHES = {"logreg_iris.onnx": [3]}  # a fixed batch of 3


def p50(path: Path, backend: str, runs: int, scratch: Path) -> float | str:
    try:
        config = BenchConfig(runs=runs, backend=backend, input_shape=SHAPES.get(path.name),
                             batches=BATCHES.get(path.name, [1]))
        report, _ = bench(config, [path], scratch / f"{path.stem}-{backend}.json")
    except InputError as exc:
        return f"refused: {str(exc).split(': ', 2)[-1][:70]}"
    return report.results[0].latency_us["p50"]


def isolated(check: str, path: Path) -> str:
    """One check in a child process: LiteRT's reference kernels and TFLM can abort the process."""
    if path.suffix != ".tflite":
        return "-"
    done = subprocess.run([sys.executable, __file__, "--check", check, str(path)], capture_output=True, text=True)
    if done.returncode < 0:
        before = done.stdout.strip().splitlines()  # what was measured before the crash
        return (f"{'LiteRT reference kernels' if check == 'numpy' else 'TFLM'} crashed "
                f"({signal.Signals(-done.returncode).name})" + (f"; {before[-1]}" if before else ""))
    return (done.stdout.strip().splitlines() or [done.stderr.strip()[-80:]])[-1]


def numpy_exact(path: Path) -> str:
    try:
        numpy = Model(path, backend="numpy", classifier=False)
    except InputError as exc:
        return f"refused: {str(exc).split(': ', 1)[-1][:60]}"
    fast = Model(path, classifier=False)
    x = [numpy.example_input(1, seed) for seed in range(8)]  # batch 1: some models fix it
    if numpy.input.dtype == "float32":  # float arithmetic: close, not bit-exact (another summation order)
        diff = max(float(np.abs(numpy.run(a) - fast.run(a)).max()) for a in x)
        return f"float: max abs diff {diff:.1e} vs LiteRT on 8 inputs"
    steps = max(int(np.abs(numpy.run(a).astype(np.int64) - fast.run(a)).max()) for a in x)
    print(f"vs LiteRT default kernels: max {steps} steps", flush=True)  # in case the reference kernels abort
    same = all(np.array_equal(numpy.run(a), Model(path, kernels="reference", classifier=False).run(a)) for a in x)
    return "bit-exact with reference kernels on 8 inputs" if same else "DIFFERS from reference kernels"


def arena(path: Path) -> int | str:
    from edgefashion.host.firmware import measure_arena_isolated
    try:
        return measure_arena_isolated(path)["total"]
    except Exception as exc:  # TFLM refuses float ops it lacks, or a model that does not fit
        return f"refused: {str(exc).split(': ', 1)[-1][:70]}"


def describe(path: Path) -> tuple[str, str]:
    try:
        model = Model(path, classifier=False)
    except InputError as exc:
        return f"refused: {str(exc).split(': ', 1)[-1][:70]}", "-"
    io = (", ".join(f"{t.dtype} {list(t.shape)}" for t in model.inputs) + " -> "
          + ", ".join(f"{t.dtype} {list(t.shape)}" for t in model.outputs))
    if path.suffix == ".tflite":
        ops = Counter(op.op for op in read_tflite(path.read_bytes(), path.name).operators)
        return io, ", ".join(f"{op} x{n}" for op, n in ops.most_common())
    from edgefashion.device.runtime import onnx_op_types
    return io, ", ".join(sorted(onnx_op_types(path.read_bytes())))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--check", nargs=2, metavar=("KIND", "MODEL"), help=argparse.SUPPRESS)  # isolated()
    args = parser.parse_args(argv)
    if args.check:
        print({"numpy": numpy_exact, "arena": arena}[args.check[0]](Path(args.check[1])))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        models = built_models(scratch) + sorted(p for p in (ROOT / "tests" / "fixtures" / "foreign").iterdir()
                                                 if p.suffix in (".tflite", ".onnx") and not p.name.startswith("malformed")) + shipped_models()
        rows = []
        for path in models:
            io, ops = describe(path)
            rows.append({"model": path.name, "input -> output": io, "ops": ops,
                         "p50 us (LiteRT / ONNX Runtime)": p50(path, "auto", args.runs, scratch),
                         "p50 us (numpy backend)": p50(path, "numpy", args.runs, scratch) if path.suffix == ".tflite"
                         else "-", "numpy backend": isolated("numpy", path), "TFLM arena bytes": isolated("arena", path)})
            print(f"done {path.name}", file=sys.stderr)
    info = cpu.describe()
    print(f"CPU: {info.model} ({info.int8_path}); batch 1, 1 thread, median of >= {args.runs} runs\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
