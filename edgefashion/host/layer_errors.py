"""Which layers lose the most in int8: TFLite's QuantizationDebugger on the run's calibration images."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..console import quiet
from ..files import read_json
from . import import_tf

DEBUG_IMAGES = 100  # enough for stable per-layer statistics, quick on 2 cores


def layer_errors(run: Path, verbose: bool = False) -> list[dict]:
    """One row per quantized tensor, worst first (rmse in units of the tensor's scale)."""
    from .export import ExportConfig, calibration_set, tflite_converter
    from .model import load_model

    tf = import_tf(verbose)
    model = load_model(run / "model.keras", verbose)
    calib_info = read_json(run / "export" / "export.json").get("calibration", {})
    config = ExportConfig(run=run, calibration_count=calib_info.get("count", 500), seed=calib_info.get("seed", 0))
    calib, _ = calibration_set(config)
    debug = calib[:DEBUG_IMAGES]
    with quiet(verbose):
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=tflite_converter(tf, model, calib),
            debug_dataset=lambda: ([debug[i:i + 1]] for i in range(len(debug))))
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    rows = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale, mse = float(row["scale"]), float(row["mean_squared_error"])
        rows.append({"op": row["op_name"], "tensor": _short(row["tensor_name"]),
                     "elements": int(float(row["num_elements"])),
                     "rmse_per_step": round(mse ** 0.5 / scale, 4) if scale else None,
                     "max_abs_error": round(float(row["max_abs_error"]), 6),
                     "mean_error": round(float(row["mean_error"]), 6), "scale": scale})
    return sorted(rows, key=lambda r: -(r["rmse_per_step"] or 0))


def _short(tensor_name: str) -> str:
    """'fashion_cnn_1/conv1_1/Relu;...' -> 'conv1_1/Relu'."""
    first = tensor_name.split(";")[0]
    return first.split("/", 1)[1] if "/" in first else first
