"""Which layers lose the most in int8, at export time, on the export's own calibration images
(verify only reads the tables): TFLite's QuantizationDebugger for model_int8.tflite, ONNX Runtime's
QDQ debugging tools (qdq_loss_debug) for model_int8.onnx."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np

from ..console import quiet
from ..schemas import LayerErrors

DEBUG_IMAGES = 100  # enough for stable per-layer statistics, quick on 2 cores


def _statistics(tf, converter, calib: np.ndarray, verbose: bool) -> list[dict]:
    """TFLite's QuantizationDebugger's per-tensor statistics on the first DEBUG_IMAGES images."""
    debug = calib[:DEBUG_IMAGES]
    with quiet(verbose):
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=lambda: ([debug[i:i + 1]] for i in range(len(debug))))
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    return list(csv.DictReader(io.StringIO(dump.getvalue())))


def _rmse_per_step(row: dict) -> float | None:
    scale, mse = float(row["scale"]), float(row["mean_squared_error"])
    return round(mse ** 0.5 / scale, 4) if scale else None


def layer_errors(tf, converter, calib: np.ndarray, model_name: str, verbose: bool = False) -> LayerErrors:
    """One row per quantized tensor, worst first (rmse in units of the tensor's scale)."""
    debug = calib[:DEBUG_IMAGES]
    rows = []
    for row in _statistics(tf, converter, calib, verbose):
        scale = float(row["scale"])
        rows.append({"op": row["op_name"], "tensor": short_name(row["tensor_name"]),
                     "elements": int(float(row["num_elements"])),
                     "rmse_per_step": _rmse_per_step(row),
                     "max_abs_error": round(float(row["max_abs_error"]), 6),
                     "mean_error": round(float(row["mean_error"]), 6), "scale": scale})
    rows.sort(key=lambda r: -(r["rmse_per_step"] or 0))
    return LayerErrors(model=model_name, images=len(debug), rows=rows)


def onnx_layer_errors(f32_path: Path, int8_path: Path, calib: np.ndarray, reader_class) -> LayerErrors:
    """Per activation of the int8 ONNX model: its signal-to-quantization-noise ratio (dB; higher is
    better) against the float model's same tensor, and against its own value before quantization."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)
    debug = calib[:DEBUG_IMAGES]
    with tempfile.TemporaryDirectory(dir=int8_path.parent) as scratch:  # inside export's staging folder
        float_aug, int8_aug = Path(scratch) / "f32.onnx", Path(scratch) / "int8.onnx"
        modify_model_output_intermediate_tensors(f32_path, float_aug)
        modify_model_output_intermediate_tensors(int8_path, int8_aug)
        float_acts = collect_activations(str(float_aug), reader_class(debug))
        int8_acts = collect_activations(str(int8_aug), reader_class(debug))
    errors = compute_activation_error(create_activation_matching(int8_acts, float_acts))
    rows = [{"tensor": short_name(name), "sqnr_vs_float_model_db": _db(e.get("xmodel_err")),
             "sqnr_of_its_quantization_db": _db(e.get("qdq_err"))} for name, e in errors.items()]
    rows.sort(key=lambda r: r["sqnr_vs_float_model_db"] if r["sqnr_vs_float_model_db"] is not None else 1e9)
    return LayerErrors(model=int8_path.name, images=len(debug), rows=rows)


def _db(value) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 2)


def short_name(tensor_name: str) -> str:
    """'fashion_cnn_1/conv1_1/Relu;...' -> 'conv1_1/Relu'."""
    first = tensor_name.split(";")[0]
    return first.split("/", 1)[1] if "/" in first else first
