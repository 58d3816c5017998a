"""RUN/model.keras -> int8 and float TFLite, float and int8 (QDQ) ONNX, and a C array for firmware.

All or nothing: the whole set is built in a private folder beside RUN/export, every model checked
against Keras on the calibration images, and only then swapped in for the old set. One export
per run directory at a time (a lock).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import rundata
from ..data import prepare
from ..console import step
from ..device.runtime import Model
from ..device.verify import Gates, gate_failure
from ..errors import CheckFailed, InputError, MissingDependency
from ..files import atomic_path, check_replaceable, replace_dir, restore_dir, run_lock, sha256_bytes, sha256_file, staging_dir, write_bytes
from ..mcu import write_c_array
from ..options import name_list, positive_int, setting
from ..rundir import ExportDir, Run, indices_sha256, clean_leftovers
from ..schemas import Artifact, Calibration, ExportReport, TensorInfo
from ..formats import FORMATS
from ..render import table
from ..stage import Stage
from . import import_tf, quiet, versions
from .layer_errors import layer_errors, onnx_layer_errors
from .model import load_model

ONNX_OPSET = 17


@dataclass(frozen=True)
class OnnxInt8Settings:
    """ONNX Runtime static quantization settings. The defaults keep integer results the same on
    every CPU: with 7-bit weights (reduce_range) and uint8 activations, x86 without VNNI
    (vpmaddubsw, int16 pair sums) cannot saturate: 2 x 255 x 64 = 32,640 < 32,767.
    benchmarks/onnx_int8_settings.py measures the alternatives."""

    activations: str = "uint8"      # uint8 | int8
    weights: str = "int8"           # int8 | uint8
    reduce_range: bool = True       # 7-bit weights
    per_channel: bool = True
    quant_format: str = "QDQ"       # QDQ | QOperator
    calibration_method: str = "MinMax"
    why: str = field(default="uint8 activations x 7-bit int8 weights: no int16 saturation on x86 without "
                             "VNNI, so the same integers on VNNI, AVX2, SSE and Arm (measured: "
                             "benchmarks/onnx_int8_settings.py); the fastest of the settings that keep it",
                     compare=False)


@dataclass
class ExportConfig:
    formats: tuple = setting(FORMATS, "comma-separated subset of " + ",".join(FORMATS), type=name_list)
    calibration_count: int = setting(500, "training images that calibrate int8", flag="--calibration",
                                     type=positive_int)
    seed: int = setting(0, "seed choosing the calibration images")
    data: Path | None = setting(None, "training CSV or IDX folder for calibration (default: the data the "
                                      "run was trained on)", type=Path)
    gates: Gates = field(default_factory=Gates)
    onnx_int8: OnnxInt8Settings = field(default_factory=OnnxInt8Settings)
    verbose: bool = False

    def validate(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise InputError(f"format {unknown[0]!r}, expected some of {', '.join(FORMATS)}")
        if self.calibration_count < 1:
            raise InputError(f"--calibration {self.calibration_count}, expected a positive integer")
        self.gates.validate()
        if "onnx-int8" in self.formats and "onnx-f32" not in self.formats:
            # the int8 ONNX model is quantized from the float one, so that one comes along
            self.formats = tuple(f for f in FORMATS if f in (*self.formats, "onnx-f32"))


def calibration_set(config: ExportConfig, run: Run) -> tuple[np.ndarray, np.ndarray, Calibration]:
    """Seeded random training images (never test images): their indices, the images preprocessed
    as at inference, and what export.json records of them."""
    train_set = rundata.training_rows(run, config.data)  # never the held-out test rows
    if config.calibration_count > len(train_set):
        raise InputError(f"--calibration {config.calibration_count}, but {train_set.source} "
                         f"has only {len(train_set)} training images")
    rng = np.random.default_rng(config.seed)
    indices = np.sort(rng.choice(len(train_set), config.calibration_count, replace=False)).astype(np.int64)
    info = Calibration(count=int(len(indices)), seed=config.seed, source=train_set.source,
                       dataset_sha256=train_set.sha256, indices_sha256=indices_sha256(indices))
    return indices, prepare(train_set.images[indices]), info


def export(config: ExportConfig, run: Run) -> ExportReport:
    """Build every requested artifact, then swap the set in as RUN/export/; return export.json."""
    config.validate()
    if not run.root.is_dir():
        raise InputError(f"{run.root}: run directory not found (run `edgefashion train --out {run.root}` first)")
    with run_lock(run.root, "export"):
        restore_dir(run.export_dir)
        clean_leftovers(run)  # half-written files and staging folders of a killed run
        check_replaceable(run.export_dir, ExportDir.NAMES)
        model_sha256 = sha256_file(run.model) if run.model.is_file() else None  # what the models come from
        model = load_model(run.model, config.verbose)
        staging = staging_dir(run.export_dir)
        try:
            manifest = _build(config, run, model, model_sha256, staging)
            replace_dir(staging, run.export_dir, ExportDir.NAMES)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build(config: ExportConfig, run: Run, model, model_sha256: str, out: Path) -> ExportReport:
    """Everything of RUN/export/, written into `out` (a private folder the caller swaps in)."""
    staged = ExportDir(out)
    labels, shape = rundata.class_names(run), rundata.image_shape(run)
    takes = (tuple(model.inputs[0].shape[1:]), model.outputs[0].shape[-1])
    if takes != (shape, len(labels)):
        raise InputError(f"{run.model}: takes {'x'.join(map(str, takes[0]))} images of {takes[1]} classes, but the "
                         f"run's data ({run.config.name}) is {'x'.join(map(str, shape))} images of {len(labels)} classes")
    tf = import_tf(config.verbose)
    indices, calib, calib_info = calibration_set(config, run)
    with quiet(config.verbose):
        reference = model.predict(calib, batch_size=500, verbose=0)
    builders = {"tflite-int8": lambda: _tflite(tf, model, calib, quantize=True),
                "tflite-f32": lambda: _tflite(tf, model, calib, quantize=False),
                "onnx-f32": lambda: _onnx_f32(tf, model, calib.shape[1:]),
                "onnx-int8": lambda: quantize_onnx(staged.model("onnx-f32"), calib, config.onnx_int8)}
    artifacts = []
    for fmt in (f for f in FORMATS if f in config.formats):
        step(f"export {fmt}")
        started = time.monotonic()
        with quiet(config.verbose):
            content = builders[fmt]()
        entry = _check_and_write(fmt, content, staged.model(fmt), calib, reference, config.gates)
        entry.seconds = round(time.monotonic() - started, 2)
        artifacts.append(entry)
    with atomic_path(staged.calibration, suffix=".npz") as tmp:
        np.savez_compressed(tmp, indices=indices)
    if "tflite-int8" in config.formats:
        int8 = staged.model("tflite-int8")
        artifacts.extend(write_c_array(int8.read_bytes(), staged, labels))
        step("per-layer int8 error (QuantizationDebugger)")
        layer_errors(tf, tflite_converter(tf, model, calib), calib, int8.name, config.verbose).write(staged.layer_errors)
    if {"onnx-f32", "onnx-int8"} <= set(config.formats):
        step("per-layer int8 error of the ONNX model (qdq_loss_debug)")
        try:
            with quiet(config.verbose):
                errors = onnx_layer_errors(staged.model("onnx-f32"), staged.model("onnx-int8"), calib, CalibrationReader)
            errors.write(staged.layer_errors_onnx)
        except Exception as exc:  # a debugging aid: its failure must not fail the export
            step(f"per-layer ONNX errors skipped ({type(exc).__name__}: {str(exc)[:120]})")
    manifest = ExportReport(source=str(run.model), model_sha256=model_sha256, artifacts=artifacts, calibration=calib_info,
                            gates=asdict(config.gates), labels=labels, versions=versions(),
                            onnx_int8=asdict(config.onnx_int8) if "onnx-int8" in config.formats else None)
    manifest.write(staged.manifest)
    return manifest


def _check_and_write(fmt: str, content: bytes, dest: Path, calib: np.ndarray, reference: np.ndarray,
                     gates: Gates) -> Artifact:
    """Run the exported bytes through the edge runtime beside Keras; write only if they pass."""
    exported = Model(content, name=dest.name)
    probs = exported.predict_proba(calib)
    check = {"max_abs_diff": float(np.abs(probs - reference).max()),
             "top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean())}
    reasons = gates.failures(fmt, check)
    if reasons:
        raise CheckFailed(gate_failure(dest.name, reasons, f"vs Keras on the {len(calib)} calibration images"))
    write_bytes(dest, content)
    output = TensorInfo(**exported.output.as_dict())
    if fmt == "onnx-int8":  # float output, but on the int8 grid of its last DequantizeLinear
        output.scale, output.zero_point = onnx_output_quantization(content)
    return Artifact(file=dest.name, format=fmt, bytes=len(content), sha256=sha256_bytes(content),
                    input=TensorInfo(**exported.input.as_dict()), output=output, check=check)


# --- TFLite ---------------------------------------------------------------------------------

def _tflite(tf, model, calib: np.ndarray, quantize: bool) -> bytes:
    converter = tflite_converter(tf, model, calib if quantize else None)
    return bytes(converter.convert())


def tflite_converter(tf, model, calib: np.ndarray | None):
    """A TFLite converter for `model`; with calibration images, full-integer int8 (ops, input, output)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calib is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter


# --- ONNX -----------------------------------------------------------------------------------

def _onnx_f32(tf, model, image_shape: tuple) -> bytes:
    """tf2onnx through a tf.function: its from_keras fails on Keras 3 models."""
    try:
        import tf2onnx
    except ImportError:
        raise MissingDependency("tf2onnx", "host") from None
    spec = (tf.TensorSpec((None, *image_shape), tf.float32, name="input"),)
    forward = tf.function(lambda x: {"probabilities": model(x, training=False)}, input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=ONNX_OPSET)
    _name_batch_dim(proto)
    return _static_flatten(proto).SerializeToString()


def _static_flatten(proto):
    """Give each Flatten-style Reshape a constant target shape [-1, features].

    tf2onnx builds Keras' Flatten as Shape -> Gather -> Cast -> Slice -> Concat -> Cast -> Reshape, to
    keep the batch dynamic. Seven small nodes run for every image (measured on the seed CNN's int8
    model: about 17 % of its time at batch 1), although the features are a known constant. The new
    graph is kept only if it gives the very same outputs as the old one at batch 1 and 3."""
    import onnx
    from onnx import numpy_helper, shape_inference

    original = proto.SerializeToString()
    graph = shape_inference.infer_shapes(proto).graph
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in (*graph.value_info, *graph.input, *graph.output)}
    constants = {init.name for init in proto.graph.initializer}
    changed = False
    for node in proto.graph.node:
        if node.op_type != "Reshape" or node.input[1] in constants:
            continue
        source, target = dims.get(node.input[0]), dims.get(node.output[0])
        if not source or None in source[1:] or not target or len(target) != 2:
            continue
        name = f"{node.name}_static_shape"
        features = int(np.prod(source[1:]))
        proto.graph.initializer.append(numpy_helper.from_array(np.array([-1, features], np.int64), name))
        node.input[1] = name
        changed = True
    if not changed:
        return proto
    _drop_dead_nodes(proto.graph)
    onnx.checker.check_model(proto)
    return proto if _same_outputs(original, proto.SerializeToString()) else onnx.load_from_string(original)


def _same_outputs(a: bytes, b: bytes) -> bool:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    sessions = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]) for m in (a, b)]
    import onnx

    shape = [d.dim_value for d in onnx.load_from_string(a).graph.input[0].type.tensor_type.shape.dim]
    for batch in (1, 3):
        x = {"input": rng.random((batch, *shape[1:]), dtype=np.float32)}
        if not np.array_equal(sessions[0].run(None, x)[0], sessions[1].run(None, x)[0]):
            return False
    return True


def _drop_dead_nodes(graph) -> None:
    """Remove nodes whose outputs nothing uses (the old shape computation)."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _name_batch_dim(proto) -> None:
    """Call the dynamic batch dimension 'N' rather than tf2onnx's 'unk__123'."""
    for value in (*proto.graph.input, *proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"


def onnx_output_quantization(content: bytes) -> tuple[float | None, int | None]:
    """Scale and zero point of the DequantizeLinear that produces the graph output, if any."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise MissingDependency("onnx", "host") from None

    model = onnx.load_from_string(content)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    output = model.graph.output[0].name
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and output in node.output:
            scale, zero_point = constants.get(node.input[1]), constants.get(node.input[2])
            if scale is not None and zero_point is not None:
                return float(scale), int(zero_point)
    return None, None


class CalibrationReader:
    """onnxruntime's CalibrationDataReader: one image per get_next(), then None."""

    def __init__(self, images: np.ndarray, input_name: str = "input"):
        self.images, self.input_name, self.position = images, input_name, 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.images):
            return None
        self.position += 1
        return {self.input_name: self.images[self.position - 1:self.position]}

    def rewind(self) -> None:
        self.position = 0

    def __iter__(self):  # qdq_loss_debug iterates the reader
        self.rewind()
        return iter(self.get_next, None)


def quantize_onnx(f32_path: Path, calib: np.ndarray, settings: OnnxInt8Settings = OnnxInt8Settings()) -> bytes:
    """ONNX Runtime static quantization of the float model at `f32_path`; returns the int8 model."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingDependency("onnxruntime with its quantization tools (and sympy)", "host") from None

    if not f32_path.is_file():
        raise InputError(f"{f32_path}: needed to make the int8 ONNX model")
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    # Scratch files live in a temporary folder; the caller puts the result in place.
    with tempfile.TemporaryDirectory(dir=f32_path.parent) as scratch:  # inside the staging folder
        pre, quantized = Path(scratch) / "pre.onnx", Path(scratch) / "int8.onnx"
        quant_pre_process(str(f32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(quantized), CalibrationReader(calib),
                        quant_format=QuantFormat[settings.quant_format], per_channel=settings.per_channel,
                        reduce_range=settings.reduce_range,
                        activation_type=types[settings.activations], weight_type=types[settings.weights],
                        calibrate_method=CalibrationMethod[settings.calibration_method])
        return quantized.read_bytes()


def render(manifest: ExportReport) -> str:
    rows = [{"file": a.file, "format": a.format, "bytes": a.bytes,
             "check": ", ".join(f"{k} {v:.3g}" for k, v in (a.check or {}).items()), "seconds": a.seconds}
            for a in manifest.artifacts]
    return table(rows) + (f"\ncalibration: {manifest.calibration.count} training images, "
                          f"seed {manifest.calibration.seed}")


STAGE = Stage(
    name="export", help="quantize RUN/model.keras to int8/float TFLite and ONNX (host)",
    description="Write RUN/export/: model_int8.tflite (full-integer int8), model_f32.tflite, model_f32.onnx, "
                "model_int8.onnx (QDQ: uint8 activations, per-channel 7-bit int8 weights, the same integers on "
                "every CPU), the int8 model as a C array, the calibration indices, the per-layer int8 error "
                "table and export.json (with the sha256 of the model.keras it came from: the stages after it "
                "refuse an export whose model.keras has changed since). Each model is checked against Keras on "
                "the calibration images with the gates below; the new set replaces the old one only whole.",
    settings=ExportConfig, run=export, report=ExportReport, render=render, output=lambda run: run.export_dir)
