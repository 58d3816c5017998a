"""RUN/model.keras -> int8 and float TFLite, float and int8 (QDQ) ONNX, and a C array for firmware.

All or nothing: the whole set is built in a private folder beside RUN/export, every model checked
against Keras on the calibration images, and only then swapped in for the old set. One export
per run directory at a time (a lock).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import rundata
from ..data import prepare
from ..console import step
from ..device import ood
from ..device.runtime import Model
from ..device.verify import Gates, gate_failure
from ..errors import CheckFailed, InputError, MissingDependency
from ..files import atomic_path, check_replaceable, replace_dir, restore_dir, run_lock, sha256_bytes, sha256_file, staging_dir, write_bytes
from ..mcu import write_c_array
from ..options import name_list, positive_int, setting
from ..rundir import ExportDir, Run, indices_sha256, clean_leftovers
from ..schemas import Artifact, Calibration, ExportReport, TensorInfo
from ..formats import FIRMWARE_FORMAT, FORMATS
from ..render import table
from ..stage import Stage
from . import import_tf, quiet, versions
from . import adaround, equalize, int8_search, qat
from .int8_search import METHODS, Built, Search
from ..device.tflite_file import read as read_tflite
from .layer_errors import DEBUG_IMAGES, layer_errors, onnx_layer_errors
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
    calibration_method: str = "MinMax"  # MinMax | Percentile | Entropy (the int8 search tries them)
    nodes_to_exclude: tuple = ()    # nodes left in float (the int8 search's float-layers step)
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
    quantization: str = setting("auto", "how int8 models are made: auto (plain post-training quantization; "
                                        "when it misses --max-drop/--min-agreement on validation images, "
                                        "more calibration, cross-layer equalization, learned rounding, float layers, then "
                                        "quantization-aware fine-tuning, until one meets them), or plain PTQ and only one of "
                                        + ", ".join(METHODS[2:]), choices=METHODS, metavar="|".join(METHODS))
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


def calibration_set(config: ExportConfig, run: Run, train_set=None) -> tuple[np.ndarray, np.ndarray, Calibration]:
    """Seeded random training images (never test images): their indices, the images preprocessed
    as at inference, and what export.json records of them. `train_set`: the run's training rows,
    when the caller has read them already."""
    if train_set is None:
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
            with tempfile.TemporaryDirectory(dir=staging, prefix=".scratch-") as scratch:  # the search's files
                manifest = _build(config, run, model, model_sha256, staging, Path(scratch))
            replace_dir(staging, run.export_dir, ExportDir.NAMES)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build(config: ExportConfig, run: Run, model, model_sha256: str, out: Path, scratch: Path) -> ExportReport:
    """Everything of RUN/export/, written into `out` (a private folder the caller swaps in)."""
    staged = ExportDir(out)
    labels, shape = rundata.class_names(run), rundata.image_shape(run)
    takes = (tuple(model.inputs[0].shape[1:]), model.outputs[0].shape[-1])
    if takes != (shape, len(labels)):
        raise InputError(f"{run.model}: takes {'x'.join(map(str, takes[0]))} images of {takes[1]} classes, but the "
                         f"run's data ({run.config.name}) is {'x'.join(map(str, shape))} images of {len(labels)} classes")
    tf = import_tf(config.verbose)
    rows = rundata.training_rows(run, config.data)  # read once: calibration, validation, balanced calibration
    indices, calib, calib_info = calibration_set(config, run, rows)
    with quiet(config.verbose):
        reference = model.predict(calib, batch_size=500, verbose=0)
    int8_formats = [f for f in config.formats if f.endswith("int8")]
    recipes = Recipes(tf, model, calib, config, run, rows, indices, scratch) if int8_formats else None
    builders = {"tflite-f32": lambda: _tflite(tf, model, calib, quantize=False),
                "onnx-f32": lambda: _onnx_f32(tf, model, calib.shape[1:])}
    artifacts, searches, float_p50 = [], {}, {}
    for fmt in (f for f in FORMATS if f in config.formats):
        step(f"export {fmt}")
        started = time.monotonic()
        if fmt in int8_formats:
            searches[fmt] = Search(fmt, config.gates, recipes.validation, config.quantization, config.verbose)
            content = _searched(searches[fmt], recipes, staged)
        else:
            with quiet(config.verbose):
                content = builders[fmt]()
            float_p50[fmt] = int8_search.p50_us(content, recipes.validation.images[:1]) if recipes else None
        # int8 models were judged by the search on validation images; float ones are judged here
        entry = _check_and_write(fmt, content, staged.model(fmt), calib, reference, config.gates,
                                 gate=fmt not in int8_formats)
        entry.seconds = round(time.monotonic() - started, 2)
        artifacts.append(entry)
    for search in searches.values():
        if not search.chosen.full_int8:
            search.chosen.float_share = int8_search.float_share(search.chosen.content, staged.model(search.fmt).name)
    for line in int8_search.describe(list(searches.values())):
        step(line)
    with atomic_path(staged.calibration, suffix=".npz") as tmp:
        np.savez_compressed(tmp, indices=indices)
    if len(rows) >= ood.MIN_IMAGES:
        step("what the training images look like, for predict's warning on unlike inputs")
        write_bytes(staged.ood, ood.to_bytes(ood.fit(rows.images, config.seed)))
    else:
        step(f"no warning on unlike inputs: {len(rows)} training images, {ood.MIN_IMAGES} needed")
    firmware = None
    if "tflite-int8" in config.formats:
        firmware = _firmware_model(searches["tflite-int8"], staged, artifacts)
        int8 = staged.firmware_model if firmware else staged.model("tflite-int8")
        artifacts.extend(write_c_array(int8.read_bytes(), staged, labels))
        step("per-layer int8 error (QuantizationDebugger)")
        full_model, full_calib = (firmware or searches["tflite-int8"].chosen).recipe
        layer_errors(tf, tflite_converter(tf, full_model, full_calib), full_calib, int8.name,
                     config.verbose).write(staged.layer_errors)
    if {"onnx-f32", "onnx-int8"} <= set(config.formats):
        step("per-layer int8 error of the ONNX model (qdq_loss_debug)")
        try:
            with quiet(config.verbose):
                made_from = searches["onnx-int8"].chosen.recipe[0]  # the float model it was quantized from
                errors = onnx_layer_errors(made_from, staged.model("onnx-int8"), calib, CalibrationReader)
            errors.write(staged.layer_errors_onnx)
        except Exception as exc:  # a debugging aid: its failure must not fail the export
            step(f"per-layer ONNX errors skipped ({type(exc).__name__}: {str(exc)[:120]})")
    manifest = ExportReport(source=str(run.model), model_sha256=model_sha256, artifacts=artifacts, calibration=calib_info,
                            gates=asdict(config.gates), labels=labels, versions=versions(),
                            onnx_int8=_onnx_settings(searches.get("onnx-int8")),
                            quantization=int8_search.report(list(searches.values()), recipes.validation,
                                                            float_p50, firmware) if recipes else None,
                            ood_sha256=sha256_file(staged.ood) if staged.ood.is_file() else None)
    manifest.write(staged.manifest)
    return manifest


def _searched(search: Search, recipes: "Recipes", staged: ExportDir) -> bytes:
    """The int8 model the search chose; fails the export when no candidate meets the gates."""
    chosen = search.run(recipes.steps(search.fmt, search, staged))
    if not chosen.meets_gates:
        raise CheckFailed(gate_failure(
            staged.model(search.fmt).name, chosen.failures(search.gates),
            f"the best of {len(search.tried)} int8 candidates on {len(recipes.validation.images)} validation "
            f"images; " + int8_search.describe([search])[0]))
    return chosen.content


def _firmware_model(search: Search, staged: ExportDir, artifacts: list):
    """When the chosen TFLite model keeps float layers, TFLM (full-int8 only) gets the best full-int8
    candidate, written beside it; returns that candidate, else None."""
    if search.chosen.full_int8:
        return None
    firmware = search.best(full_int8_only=True)
    verdict = "meets the gates" if firmware.meets_gates else "misses the gates: TFLM will be less accurate"
    step(f"{'' if firmware.meets_gates else 'warning: '}firmware: {staged.firmware_model.name}, the full-int8 "
         f"{firmware.name} ({firmware.accuracy_drop_pp:.2f} pp, agreement {firmware.top1_agreement:.2%}) {verdict}; "
         f"model_int8.tflite keeps {', '.join(search.chosen.float_layers)} in float, which TFLM does not run")
    write_bytes(staged.firmware_model, firmware.content)
    artifacts.append(Artifact(file=staged.firmware_model.name, format=FIRMWARE_FORMAT,
                              bytes=len(firmware.content), sha256=sha256_bytes(firmware.content)))
    return firmware


def _check_and_write(fmt: str, content: bytes, dest: Path, calib: np.ndarray, reference: np.ndarray,
                     gates: Gates, gate: bool = True) -> Artifact:
    """Run the exported bytes through the edge runtime beside Keras on the calibration images; write
    them only if they pass the gates (`gate`) and record the figures."""
    exported = Model(content, name=dest.name)
    probs = exported.predict_proba(calib)
    check = {"max_abs_diff": float(np.abs(probs - reference).max()),
             "top1_agreement": float((probs.argmax(1) == reference.argmax(1)).mean())}
    reasons = gates.failures(fmt, check) if gate else []
    if reasons:
        raise CheckFailed(gate_failure(dest.name, reasons, f"vs Keras on the {len(calib)} calibration images"))
    write_bytes(dest, content)
    output = TensorInfo(**exported.output.as_dict())
    if fmt == "onnx-int8":  # float output, but on the int8 grid of its last DequantizeLinear
        output.scale, output.zero_point = onnx_output_quantization(content)
    return Artifact(file=dest.name, format=fmt, bytes=len(content), sha256=sha256_bytes(content),
                    input=TensorInfo(**exported.input.as_dict()), output=output, check=check)


# --- the int8 candidates ----------------------------------------------------------------------

class Recipes:
    """The int8 candidates of export's search (int8_search.py tries them in order), made with
    export's own converters. A recipe is what a candidate was made from, so that the float-layers
    steps can start from the best full-int8 one: (Keras model, calibration images) for TFLite,
    (float ONNX file, images, OnnxInt8Settings) for ONNX."""

    def __init__(self, tf, model, calib: np.ndarray, config: ExportConfig, run: Run, rows, indices: np.ndarray,
                 scratch: Path):
        self.tf, self.model, self.calib, self.config, self.rows, self.scratch = tf, model, calib, config, rows, scratch
        with quiet(config.verbose):
            self.validation = int8_search.validation_set(rows, run, config.data, indices, model, config.seed)
        step(f"int8 models judged on {self.validation.info['count']} validation images "
             f"({self.validation.info['source']})")
        self.target = max(int8_search.MORE_CALIBRATION, len(calib))
        self.notes = {}  # id(model) -> what a repair did to it, once it has run
        self.keras_of = {}  # float ONNX file -> the Keras model it was converted from (the staged one: self.model)

    @cached_property
    def more(self) -> np.ndarray:
        return int8_search.balanced_calibration(self.rows, self.target, self.config.seed,
                                                exclude=self.validation.rows_used)

    @cached_property
    def unfolded(self):
        """The float model with batch norms folded into their convolutions (as the converters fold
        them), so that equalization sees conv -> ReLU -> conv; the model itself when it has none."""
        import keras
        folded = equalize.fold_batch_norm(self.model, keras)
        return folded if folded is not None and self._same_function(folded) else self.model

    @cached_property
    def equalized(self):
        """The float model after cross-layer equalization, or None (no conv/dense pair, or not the same
        function: checked on the validation images)."""
        import keras
        copy = int8_search.copy_model(keras, self.unfolded)
        rows = equalize.equalize(copy)
        if not rows or not self._same_function(copy):
            return None
        self.notes[id(copy)] = _ranges_note(rows, "weight")
        return copy

    @cached_property
    def corrected(self):
        """The equalized model with bias correction (its float function moves by the expected int8 error)."""
        import keras
        if self.equalized is None:
            return None
        copy = int8_search.copy_model(keras, self.equalized)
        layers = equalize.correct_bias(copy, keras, self.more)
        if not layers:
            return None
        self.notes[id(copy)] = self.notes[id(self.equalized)] + "; bias corrected: " + ", ".join(layers)
        return copy

    @cached_property
    def smoothed(self):
        """The float model with activation outliers moved into the next layer's weights, or None."""
        import keras
        copy = int8_search.copy_model(keras, self.unfolded)
        rows = equalize.equalize_activations(copy, keras, self.more)
        if not rows or not self._same_function(copy):
            return None
        self.notes[id(copy)] = _ranges_note(rows, "output")
        return copy

    @cached_property
    def fine_tuned(self):
        """The float model after quantization-aware fine-tuning (qat.py), or None (not a chain of layers
        it can simulate). Its function moves on purpose, towards what int8 can represent."""
        import keras
        if not qat.can_fine_tune(self.unfolded):  # before predicting on thousands of images for nothing
            return None
        rows = np.setdiff1d(np.arange(len(self.rows)), self.validation.rows_used)  # never the judges' images
        count = qat.row_count(len(rows), self.calib.shape[1:])
        rows = np.sort(np.random.default_rng(self.config.seed).permutation(rows)[:count])
        images = prepare(self.rows.images[rows])
        targets = self.model.predict(images, batch_size=500, verbose=0)  # the float model's own answers
        started = time.monotonic()
        tuned = qat.fine_tune(self.unfolded, keras, self.tf, images, targets, self.config.seed)
        if tuned is not None:
            self.notes[id(tuned)] = (f"{qat.EPOCHS} epochs on {len(rows)} training images in "
                                     f"{time.monotonic() - started:.0f} s")
        return tuned

    def _same_function(self, copy) -> bool:
        x = self.validation.images[:500]
        return float(np.abs(copy.predict(x, batch_size=500, verbose=0) - self.validation.reference[:500]).max()) < 1e-3

    def steps(self, fmt: str, search: Search, staged: ExportDir) -> list:
        n, more = len(self.calib), f"up to {self.target} training images balanced over the classes"
        if fmt == "tflite-int8":
            tflite = self._tflite
            steps = [("ptq", "ptq", f"{n} random training images", lambda: tflite(self.model, self.calib)),
                     ("calibration", "balanced", more, lambda: tflite(self.model, self.more)),
                     ("cle", "cle", "cross-layer equalization, " + more, lambda: tflite(self.equalized, self.more)),
                     ("cle", "cle+bias", "cross-layer equalization and bias correction, " + more,
                      lambda: tflite(self.corrected, self.more)),
                     ("cle", "smooth", "activation outliers moved into the next layer's weights, " + more,
                      lambda: tflite(self.smoothed, self.more)),
                     ("adaround", "adaround", ADAROUND_DETAIL, lambda: self._adarounded(search))]
            return (steps + int8_search.float_layer_steps(fmt, search, self._tflite_layers, self._tflite_without)
                    + [("qat", "qat", QAT_DETAIL, lambda: tflite(self.fine_tuned, self.more))])
        f32, base = staged.model("onnx-f32"), self.config.onnx_int8
        self.keras_of[f32] = self.model
        onnx, cle, corrected, smoothed = self._onnx, lambda: self._onnx_file(self.equalized, "cle"), \
            lambda: self._onnx_file(self.corrected, "cle-bias"), lambda: self._onnx_file(self.smoothed, "smooth")
        steps = [("ptq", "ptq", f"{n} random training images, MinMax", lambda: onnx(f32, self.calib, base)),
                 ("calibration", "balanced", more + ", MinMax", lambda: onnx(f32, self.more, base)),
                 ("calibration", "percentile", more + ", Percentile",
                  lambda: onnx(f32, self.more, replace(base, calibration_method="Percentile"))),
                 ("calibration", "entropy", more + ", Entropy",
                  lambda: onnx(f32, self.more, replace(base, calibration_method="Entropy"))),
                 ("cle", "cle", "cross-layer equalization, " + more, lambda: onnx(cle(), self.more, base)),
                 ("cle", "cle+bias", "cross-layer equalization and bias correction, " + more,
                  lambda: onnx(corrected(), self.more, base)),
                 ("cle", "smooth", "activation outliers moved into the next layer's weights, " + more,
                  lambda: onnx(smoothed(), self.more, base)),
                 ("adaround", "adaround", ADAROUND_DETAIL, lambda: self._adarounded(search))]
        return (steps + int8_search.float_layer_steps(fmt, search, self._onnx_layers, self._onnx_without)
                + [("qat", "qat", QAT_DETAIL, lambda: onnx(self._onnx_file(self.fine_tuned, "qat"), self.more, base))])

    def _adarounded(self, search: Search) -> Built | None:
        """The best full-int8 candidate so far with its weights rounded by AdaRound (adaround.py) on the
        format's grid: TFLite's 127 steps a side, ONNX's 64 with reduce_range (its 7-bit weights)."""
        import keras
        base, levels = search.best(full_int8_only=True), 127
        if base is None:
            return None
        model = base.recipe[0]
        if search.fmt == "onnx-int8":
            model, settings = self.keras_of.get(model), base.recipe[2]
            if settings.weights != "int8" or not settings.per_channel:  # not a symmetric per-channel grid
                return None
            levels = 64 if settings.reduce_range else 127
        if model is None or not adaround.can_round(model):
            return None
        if model is self.corrected:  # bias correction moved the float function; AdaRound aims at the float one
            model = self.equalized
        elif model is self.model:  # batch norms folded, as the converter folds them, so the grid is the kernel's
            model = self.unfolded
        started = time.monotonic()
        rounded, rows = adaround.adaround(model, keras, self.tf, base.recipe[1], self.config.seed, levels=levels)
        self.notes[id(rounded)] = (f"from {base.name}; " + ", ".join(
            f"{r['layer']}: {r['rounded_other_way']} of {r['weights']} weights the other way, output error "
            f"{r['error_nearest']:.3g} -> {r['error_learned']:.3g}" for r in rows)
            + f" ({time.monotonic() - started:.0f} s)")
        if search.fmt == "onnx-int8":
            built = self._onnx(self._onnx_file(rounded, "adaround"), base.recipe[1], base.recipe[2])
        else:
            built = self._tflite(rounded, base.recipe[1])
        return replace(built, base=base.name) if built is not None else None

    def _tflite(self, model, calib) -> Built | None:
        if model is None:
            return None
        return Built(_tflite(self.tf, model, calib, quantize=True), recipe=(model, calib),
                     note=self.notes.get(id(model), ""))

    @staticmethod
    def _tflite_layers(base) -> list[str]:
        """The output tensors of the conv and dense operators of a candidate, in graph order (the
        names the converter's denylist takes)."""
        graph = read_tflite(base.content, "candidate")
        return [graph.tensors[op.outputs[0]].name for op in graph.operators if op.op in WEIGHTED_TFLITE_OPS]

    def _tflite_without(self, base, layers: list[str]) -> bytes:
        """Full-integer int8 except `layers` (output tensor names), which stay float (the converter's
        denylist, through TFLite's QuantizationDebugger). With the last of them in float, the softmax
        after it and the model's input and output are float too: an int8 output would bring the
        1/256 step back (the debugger makes input and output int8 for all or float for both)."""
        tf, (model, calib) = self.tf, base.recipe
        head = self._tflite_layers(base)[-1] in layers
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=list(layers), denylisted_ops=["SOFTMAX"] if head else None, fully_quantize=not head)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=tflite_converter(tf, model, calib), debug_options=options,
            debug_dataset=lambda: ([calib[i:i + 1]] for i in range(min(len(calib), DEBUG_IMAGES))))
        return bytes(debugger.get_nondebug_quantized_model())

    def _onnx_file(self, model, name: str) -> Path | None:
        if model is None:
            return None
        path = self.scratch / f"{name}.onnx"
        if not path.is_file():
            path.write_bytes(_onnx_f32(self.tf, model, self.calib.shape[1:]))
            self.notes[path] = self.notes.get(id(model), "")
            self.keras_of[path] = model
        return path

    def _onnx(self, f32: Path | None, calib, settings: OnnxInt8Settings) -> Built | None:
        if f32 is None:
            return None
        return Built(quantize_onnx(f32, calib, settings, self.scratch, self._preprocessed(f32)),
                     list(settings.nodes_to_exclude),
                     (f32, calib, settings), self.notes.get(f32, ""))

    def _preprocessed(self, f32: Path) -> Path:
        """ONNX Runtime's pre-processing of a float model, done once for all its candidates."""
        pre = self.scratch / f"{f32.stem}.pre.onnx"
        if not pre.is_file():
            preprocess_onnx(f32, pre)
        return pre

    def _onnx_nodes(self, f32: Path) -> list:
        """The nodes ONNX Runtime quantizes: those of the pre-processed graph (MatMul + Add fused to Gemm)."""
        import onnx
        return list(onnx.load(str(self._preprocessed(f32))).graph.node)

    def _onnx_layers(self, base) -> list[str]:
        """The layers (tf2onnx's node-name prefix: 'model/dense_1') of the conv and dense nodes."""
        nodes = self._onnx_nodes(base.recipe[0])
        return list(dict.fromkeys(_layer_of(node.name) for node in nodes if node.op_type in WEIGHTED_ONNX_OPS))

    def _onnx_without(self, base, layers: list[str]) -> bytes:
        """The int8 ONNX model with every node of `layers` (matrix product, bias, activation, the last
        layer's softmax) in float."""
        f32, calib, settings = base.recipe
        nodes = [node.name for node in self._onnx_nodes(f32) if _layer_of(node.name) in layers]
        return quantize_onnx(f32, calib, replace(settings, nodes_to_exclude=tuple(nodes)), self.scratch,
                             self._preprocessed(f32))


ADAROUND_DETAIL = ("learned rounding of the best full-int8 candidate's weights (AdaRound) on the format's int8 "
                   "grid, layer by layer on its calibration images, then PTQ")
QAT_DETAIL = "quantization-aware fine-tuning from the trained weights, distilled from the float model, then PTQ"
WEIGHTED_TFLITE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
WEIGHTED_ONNX_OPS = ("Conv", "MatMul", "Gemm")


def _ranges_note(rows: list[dict], what: str) -> str:
    """What an equalization did: per pair, the spread of its channel ranges before and after."""
    return "; ".join(f"{r['layers']}: {what} ranges over channels {r['range_ratio_before']:g}:1 -> "
                     f"{r['range_ratio_after']:g}:1" for r in rows)


def _layer_of(node_name: str) -> str:
    """tf2onnx names a Keras layer's nodes 'model/layer/op...': the layer is the first two parts."""
    return "/".join(node_name.split("/")[:2])


def _onnx_settings(search: Search | None) -> dict | None:
    """The ONNX Runtime settings of the chosen int8 ONNX model, for export.json."""
    if search is None:
        return None
    settings = asdict(search.chosen.recipe[2])
    settings["nodes_to_exclude"] = list(settings["nodes_to_exclude"])
    return settings


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
    proto = _static_flatten(proto)
    _number_names(proto.graph)
    # tf2onnx names the graph after the tf.function's trace ('__inference_<lambda>_2667'), whose number
    # depends on what the process traced before: other bytes for the same model
    proto.graph.name, proto.graph.doc_string = "edgefashion", "converted by tf2onnx from a Keras model"
    return proto.SerializeToString()


def _number_names(graph) -> None:
    """Renumber tf2onnx's generated names ('const_axes__23'): its counter depends on the process's
    history, so the same model gave other names, and other bytes, from one export to the next."""
    import re

    generated = re.compile(r"^(.*?)__(\d+)(:\d+)?$")
    names: dict[str, str] = {}

    def renamed(name: str) -> str:
        match = generated.match(name)
        if not match:
            return name
        base = f"{match[1]}__{match[2]}"
        names.setdefault(base, f"{match[1]}__{len(names)}")
        return names[base] + (match[3] or "")

    for init in graph.initializer:
        init.name = renamed(init.name)
    for node in graph.node:
        node.name = renamed(node.name)
        node.input[:] = [renamed(n) for n in node.input]
        node.output[:] = [renamed(n) for n in node.output]
    for value in (*graph.value_info, *graph.input, *graph.output):
        value.name = renamed(value.name)


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
    """Remove nodes whose outputs nothing uses (the old shape computation), then the constants
    only they used."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)


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


def preprocess_onnx(f32_path: Path, out: Path) -> None:
    """ONNX Runtime's pre-processing for quantization (shape inference, graph optimization)."""
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise MissingDependency("onnxruntime with its quantization tools (and sympy)", "host") from None
    quant_pre_process(str(f32_path), str(out), skip_symbolic_shape=True)


def quantize_onnx(f32_path: Path, calib: np.ndarray, settings: OnnxInt8Settings = OnnxInt8Settings(),
                  scratch: Path | None = None, preprocessed: Path | None = None) -> bytes:
    """ONNX Runtime static quantization of the float model at `f32_path` (`preprocessed`: its
    pre-processing, when already made); returns the int8 model."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise MissingDependency("onnxruntime with its quantization tools (and sympy)", "host") from None

    if not f32_path.is_file():
        raise InputError(f"{f32_path}: needed to make the int8 ONNX model")
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    # Scratch files live in a temporary folder; the caller puts the result in place.
    with tempfile.TemporaryDirectory(dir=scratch or f32_path.parent) as folder:  # inside the staging folder
        pre, quantized = preprocessed or Path(folder) / "pre.onnx", Path(folder) / "int8.onnx"
        if preprocessed is None:
            preprocess_onnx(f32_path, pre)
        quantize_static(str(pre), str(quantized), CalibrationReader(calib),
                        quant_format=QuantFormat[settings.quant_format], per_channel=settings.per_channel,
                        reduce_range=settings.reduce_range,
                        activation_type=types[settings.activations], weight_type=types[settings.weights],
                        calibrate_method=CalibrationMethod[settings.calibration_method],
                        nodes_to_exclude=list(settings.nodes_to_exclude))
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
                "refuse an export whose model.keras has changed since). An int8 model must meet --max-drop and "
                "--min-agreement on 2,000 validation images (never test images); when plain quantization misses "
                "them, export tries more calibration, cross-layer equalization, bias correction, activation "
                "equalization, learned rounding, float layers, then quantization-aware fine-tuning "
                "(--quantization), and export.json "
                "lists every candidate. A "
                "float model must meet --float-tolerance on the calibration images. The new set replaces the "
                "old one only whole.",
    settings=ExportConfig, run=export, report=ExportReport, render=render, output=lambda run: run.export_dir)
