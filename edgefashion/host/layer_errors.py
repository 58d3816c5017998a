"""Which layers lose the most in int8: TFLite's QuantizationDebugger, run at export time on the
export's own calibration images (verify and bundle only read the table)."""

from __future__ import annotations

import csv
import io

import numpy as np

from ..console import quiet
from ..rundir import LayerErrors

DEBUG_IMAGES = 100  # enough for stable per-layer statistics, quick on 2 cores


def layer_errors(tf, converter, calib: np.ndarray, model_name: str, verbose: bool = False) -> LayerErrors:
    """One row per quantized tensor, worst first (rmse in units of the tensor's scale)."""
    debug = calib[:DEBUG_IMAGES]
    with quiet(verbose):
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([debug[i:i + 1]] for i in range(len(debug))))
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
    rows.sort(key=lambda r: -(r["rmse_per_step"] or 0))
    return LayerErrors(model=model_name, images=len(debug), rows=rows)


def _short(tensor_name: str) -> str:
    """'fashion_cnn_1/conv1_1/Relu;...' -> 'conv1_1/Relu'."""
    first = tensor_name.split(";")[0]
    return first.split("/", 1)[1] if "/" in first else first
