"""Cross-check: every exported model against the float model on held-out images, with gates.

The reference is the Keras model when the host hands its outputs in, else model_f32.tflite
(a device without TensorFlow). Metrics are plain numpy so they can be checked on hand-made predictions.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import cpu, data, rundata
from ..console import Progress, step
from ..errors import InputError, MissingDependency, Unsupported
from ..files import write_text
from ..options import fraction, setting, threads_setting
from .. import plots
from ..render import markdown_table, table
from ..stage import Stage
from ..rundir import Run
from ..schemas import LayerErrors, ModelResult, Reference, VerifyReport
from ..formats import FLOAT_OF
from .unpack import GOLDEN, bundle_image_shape, load_golden, open_bundle
from .locate import print_origin
from .isolate import Crashed, in_worker
from .runtime import Model, backend_setting

# --- metrics ------------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels.astype(np.int64) * k + predicted, minlength=k * k).reshape(k, k)


def per_class_accuracy(matrix: np.ndarray) -> list[float | None]:
    totals = matrix.sum(axis=1)
    return [float(matrix[i, i] / totals[i]) if totals[i] else None for i in range(len(matrix))]


def agreement_figures(probs: np.ndarray, reference: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """Accuracy of `probs`, and how far it is from the reference's probabilities (`names`: the K classes)."""
    predicted, ref_predicted = probs.argmax(1), reference.argmax(1)
    accuracy, ref_accuracy = float((predicted == labels).mean()), float((ref_predicted == labels).mean())
    k = len(names)
    matrix = confusion_matrix(labels, predicted, k)
    per_class = per_class_accuracy(matrix)
    ref_per_class = per_class_accuracy(confusion_matrix(labels, ref_predicted, k))
    diff = np.abs(probs.astype(np.float64) - reference)
    norms = np.linalg.norm(probs, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.sum(probs.astype(np.float64) * reference, axis=1) / np.maximum(norms, 1e-12)
    return {
        "accuracy": accuracy,
        "accuracy_drop_pp": round(100 * (ref_accuracy - accuracy), 4),
        "top1_agreement": float((predicted == ref_predicted).mean()),
        "per_class_accuracy": dict(zip(names, per_class)),
        "per_class_drop_pp": {label: None if a is None or r is None else round(100 * (r - a), 4)
                              for label, a, r in zip(names, per_class, ref_per_class)},
        "confusion_matrix": matrix.tolist(),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff": float(diff.max()),
        "cosine_similarity_mean": float(cosine.mean()),
        "cosine_similarity_min": float(cosine.min()),
    }


@dataclass(frozen=True)
class Gates:
    """The one set of pass/fail limits for exported models, used by export, verify and run."""

    max_drop_pp: float = setting(1.0, "largest accuracy drop of an int8 model vs the float model, in "
                                      "percentage points", flag="--max-drop", metavar="PP")
    min_agreement: float = setting(0.98, "smallest top-1 agreement of an int8 model with the float model, a "
                                         "fraction (0.98) or a percentage (98)", type=fraction, metavar="FRACTION")
    float_tolerance: float = setting(1e-4, "largest |p - p_float| of a float model", metavar="P")

    def validate(self) -> "Gates":
        if not self.max_drop_pp >= 0:
            raise InputError(f"--max-drop {self.max_drop_pp}, expected >= 0 percentage points")
        if not 0 <= self.min_agreement <= 1:
            raise InputError(f"--min-agreement {self.min_agreement}, expected a fraction between 0 and 1 "
                             f"or a percentage between 0 and 100")
        if not self.float_tolerance >= 0:
            raise InputError(f"--float-tolerance {self.float_tolerance}, expected >= 0")
        return self

    def failures(self, fmt: str, result: dict) -> list[str]:
        """Why a model fails (each reason names the figure and the limit), or [] when it passes."""
        reasons = []
        if fmt.endswith("f32") and result["max_abs_diff"] > self.float_tolerance:
            reasons.append(f"max |p - p_float| {result['max_abs_diff']:.2e} > --float-tolerance "
                           f"{self.float_tolerance:g}")
        if fmt.endswith("int8"):
            if result.get("accuracy_drop_pp", 0) > self.max_drop_pp:
                reasons.append(f"accuracy drop {result['accuracy_drop_pp']:.2f} pp > --max-drop {self.max_drop_pp:g} pp")
            if result["top1_agreement"] < self.min_agreement:
                reasons.append(f"top-1 agreement {result['top1_agreement']:.2%} < --min-agreement "
                               f"{self.min_agreement:.2%}")
        return reasons


ADVICE = ("try more calibration images (--calibration), a longer training (--epochs, no --limit), "
          "or, for a quick trial run, looser gates (--min-agreement, --max-drop)")


def gate_failure(name: str, reasons: list[str], where: str) -> str:
    """One line for a failed gate: which model, which figure, on what, and what to try."""
    return f"{name}: " + "; ".join(reasons) + f" ({where}); {ADVICE}"


# --- the command --------------------------------------------------------------------------

REFERENCES = ("auto", "keras", "tflite-f32")


@dataclass
class VerifyConfig:
    data: Path | None = setting(None, "test CSV (seed format, with labels), IDX folder or image folder (default: "
                                      "the run's test set: its --test-data, its held-out rows, or for Fashion-MNIST "
                                      "the 10,000 test images)", type=Path, in_run="test_data")
    gates: Gates = field(default_factory=Gates)
    reference: str = setting("auto", "float reference: Keras where TensorFlow is installed (auto), or "
                                     "model_f32.tflite", choices=REFERENCES)
    batch_size: int = 500
    threads: int = threads_setting(in_run=False)
    backend: str = backend_setting(in_run=False)
    verbose: bool = False

    def validate(self) -> None:
        self.gates.validate()
        if self.reference not in REFERENCES:
            raise InputError(f"--reference {self.reference!r}, expected {', '.join(REFERENCES)}")


FloatReference = Callable[[np.ndarray], np.ndarray]  # uint8 images (N, H, W[, C]) -> probabilities (N, K)


# Not a gate: a loud warning when an int8 model's probabilities are far from the float model's on
# some images even though the top-1 agreement passes (confidence a device would report wrongly).
WARN_COSINE, WARN_ABS_DIFF = 0.9, 0.5


def verify(config: VerifyConfig, run: Run, keras: FloatReference | None = None) -> VerifyReport:
    """Every exported model against the float reference: `keras` where the host hands it in,
    else model_f32.tflite. Writes RUN/verify.json, verify.md and confusion plots."""
    config.validate()
    models = run.exported_models()
    calibration = run.read_calibration()  # the set export calibrated on, as export.json recorded it
    test = rundata.test_set(run, config.data)
    names = run.read_export().labels
    started = time.monotonic()
    ref_format, reference = _reference(config, run, models, test, keras)
    results = check_models(models, config, test, reference, names)
    export = run.read_export()
    for r in results:
        r.quantization = export.made_by(r.format)
    layers = {fmt: LayerErrors.read(path) for fmt, path in (("tflite-int8", run.layer_errors),
                                                           ("onnx-int8", run.export.layer_errors_onnx))
              if path.is_file()}
    report = _report(config, ref_format, reference, test, results, started, len(calibration), layers or None)
    report.quantization = export.quantization
    report.write(run.verify)
    write_text(run.verify_md, render_markdown(report))
    by_format = {r.format: r for r in results}
    for r in results:
        paired = by_format.get(FLOAT_OF.get(r.format))
        plots.save(plots.confusion_figure(r.confusion_matrix, names, f"{r.format}: accuracy {r.accuracy:.4f}",
                                          paired.confusion_matrix if paired else None,
                                          paired.format if paired else ""), run.confusion(r.format))
    return report


def verify_bundle(config: VerifyConfig, bundle: Path, out: Path | None = None, trust=None) -> VerifyReport:
    """verify on a device: a bundle's models against its float TFLite (or ONNX) model, on the test
    set given with --data or else the bundle's golden images. No TensorFlow. Writes `out` if given."""
    config.validate()
    bundle = Path(bundle)
    with tempfile.TemporaryDirectory(prefix="edgefashion-verify-") as scratch:
        folder, manifest, provenance = open_bundle(bundle, Path(scratch), trust)
        print_origin(bundle, provenance)
        models = {fmt: folder / name for fmt, name in manifest.models.items()}
        if config.data is not None:
            test = bundle_test_set(config.data, manifest)
        else:
            golden = load_golden(folder / manifest.golden.file, manifest)
            test = data.Dataset(golden["images"], golden["labels"].astype(np.uint8),
                                f"{bundle.name}: {len(golden['labels'])} golden images", manifest.files[GOLDEN].sha256)
        started = time.monotonic()
        ref_format = next((f for f in ("tflite-f32", "onnx-f32") if f in models), None)
        if ref_format is None:
            raise InputError(f"{bundle}: no float model to verify against")
        # a bundle's models are untrusted: each runs in a worker process a crash cannot take down
        jobs = [(str(path), config.threads, config.backend, test.images, config.batch_size) for path in models.values()]
        outputs = dict(zip(models, in_worker(model_outputs, jobs)))
        reference = _outputs_or_refusal(models[ref_format], outputs[ref_format])
        if not isinstance(reference, tuple):
            raise InputError(f"{bundle}: the float model {models[ref_format].name} cannot run here ({reference})")
        reference = reference[1]
        results = check_models({f: p for f, p in models.items() if f != ref_format}, config, test, reference,
                               manifest.labels, outputs)
        for r in results:
            spec = manifest.model_specs.get(r.format)
            r.quantization = spec.quantization if spec else None
    report = _report(config, ref_format, reference, test, results, started, None, None)
    if out is not None:
        report.write(out)
    return report


def bundle_test_set(path: Path, manifest) -> data.Dataset:
    """A test set for a bundle's models: of its image shape, with labels of its classes."""
    shape = bundle_image_shape(manifest)
    test = data.load(path, "test", shape, tuple(manifest.labels))
    data.check_test_fits(test, shape, len(manifest.labels), "the bundle's models'")
    return test


def model_outputs(path: str, threads: int, backend: str, images: np.ndarray, batch_size: int):
    """(backend, probabilities, seconds) of one model on the images, or the Unsupported or
    MissingDependency that keeps it from running here."""
    try:
        model = Model(path, threads=threads, backend=backend)
    except (Unsupported, MissingDependency) as exc:
        return exc
    started = time.monotonic()
    return model.backend, model.predict_proba(images, batch_size=batch_size), time.monotonic() - started


def _outputs_or_refusal(path: Path, got):
    """A model's outputs, or why it was skipped; a model that killed its worker is one error line."""
    if isinstance(got, Crashed):
        raise InputError(f"{path.name}: killed its interpreter ({got.how}); a malformed or hostile model")
    return got


def check_models(models: dict, config: VerifyConfig, test: data.Dataset, reference: np.ndarray,
                 names: list[str], outputs: dict | None = None) -> list[ModelResult]:
    """Every model against the reference; `outputs`: each model's model_outputs, run beforehand (in a
    worker process), else run here."""
    results = []
    with Progress(len(models), "verify") as progress:
        for fmt, path in models.items():
            got = _outputs_or_refusal(path, outputs[fmt] if outputs else model_outputs(
                str(path), config.threads, config.backend, test.images, config.batch_size))
            if isinstance(got, Exception):
                print(f"warning: skipped {fmt}: {got}", file=sys.stderr)
                progress.update()
                continue
            backend, probs, seconds = got
            figures = agreement_figures(probs, reference, test.labels, names)
            failures = config.gates.failures(fmt, figures)
            warnings = []
            if figures["cosine_similarity_min"] < WARN_COSINE or figures["max_abs_diff"] > WARN_ABS_DIFF:
                warnings.append(f"{fmt}: on some images its probabilities are far from the float model's (min "
                                f"cosine {figures['cosine_similarity_min']:.2f}, max |dp| {figures['max_abs_diff']:.2f})"
                                f" though the top-1 agrees on {figures['top1_agreement']:.2%}")
            results.append(ModelResult(format=fmt, file=path.name, backend=backend, seconds=round(seconds, 2), **figures,
                                       failures=failures, passed=not failures, warnings=warnings))
            progress.update()
    return results


def _report(config, ref_format, reference, test, results, started, calibration_images, layers) -> VerifyReport:
    return VerifyReport(
        reference=Reference(format=ref_format, accuracy=float((reference.argmax(1) == test.labels).mean()),
                            samples=len(test), source=test.source, sha256=test.sha256),
        gates=asdict(config.gates), cpu=cpu.describe(), calibration_images=calibration_images, models=results,
        passed=all(r.passed for r in results), seconds=round(time.monotonic() - started, 1), layer_errors=layers)


def _reference(config: VerifyConfig, run: Run, models: dict, test: data.Dataset, keras: FloatReference | None):
    if config.reference == "keras" and keras is None:
        raise InputError(f"{run.model}: --reference keras needs TensorFlow (the host extra) and model.keras")
    if keras is not None and config.reference != "tflite-f32":
        step("reference: Keras model.keras")
        return "keras", keras(test.images)
    if "tflite-f32" not in models:
        raise InputError(f"{run.root}: no Keras model (or no TensorFlow) and no model_f32.tflite to use as the "
                         f"reference")
    step("reference: model_f32.tflite")
    return "tflite-f32", Model(models["tflite-f32"], threads=config.threads, backend=config.backend).predict_proba(
        test.images, batch_size=config.batch_size)


def failures(config: VerifyConfig, report: VerifyReport) -> list[str]:
    """One line per model that fails a gate."""
    where = f"on {report.reference.samples} test images vs {report.reference.format}"
    return [gate_failure(m.file, m.failures, where) for m in report.models if m.failures]


def render(report: VerifyReport) -> str:
    return table(summary_rows(report)) + f"\n{report.reference.samples} images, {report.seconds} s"


def summary_rows(report: VerifyReport) -> list[dict]:
    rows = [{"model": report.reference.format + " (reference)", "accuracy": report.reference.accuracy,
             "drop_pp": None, "agreement": None, "max_abs_diff": None, "cosine_min": None, "result": "-"}]
    for r in report.models:
        rows.append({"model": r.format, "accuracy": r.accuracy, "drop_pp": r.accuracy_drop_pp,
                     "agreement": r.top1_agreement, "max_abs_diff": r.max_abs_diff,
                     "cosine_min": r.cosine_similarity_min, "result": "PASS" if r.passed else "FAIL"})
    if any(r.quantization for r in report.models):  # how each int8 model was made
        made = {r.format: r.quantization for r in report.models}
        for row in rows:
            row["int8 made by"] = made.get(row["model"]) or "-"
    return rows


def render_markdown(report: VerifyReport) -> str:
    ref, gates = report.reference, report.gates
    out = ["# Cross-check against the float model\n\n",
           f"Reference: **{ref.format}**, accuracy {ref.accuracy:.4f} on {ref.samples} images "
           f"from `{ref.source}`. Gates: accuracy drop <= {gates['max_drop_pp']:g} pp, "
           f"top-1 agreement >= {gates['min_agreement']:.0%}. "
           f"Overall: **{'PASS' if report.passed else 'FAIL'}**. CPU: {report.cpu.model}, int8 path "
           f"{report.cpu.int8_path}.\n\n",
           markdown_table(summary_rows(report)),
           "\n## Per-class accuracy drop (pp)\n\n"]
    names = list(report.models[0].per_class_drop_pp) if report.models else []
    per_class = [{"class": label, **{r.format: r.per_class_drop_pp[label] for r in report.models}}
                 for label in names]
    out.append(markdown_table(per_class))
    for r in report.models:
        out.append(f"\n![confusion matrix {r.format}](confusion_{r.format}.png)\n")
        if r.failures:
            out.append(f"- {r.format} failed: " + "; ".join(r.failures) + "\n")
        for warning in r.warnings:
            out.append(f"- **warning**: {warning}\n")
    out.append(_candidates_markdown(report.quantization))
    for fmt, layers in (report.layer_errors or {}).items():
        out.append(f"\n## Layers that lose the most in int8: {fmt} ({layers.model}, {layers.images} calibration "
                   f"images)\n\n")
        out.append(LAYER_NOTES.get(fmt, "") + "\n\n")
        out.append(markdown_table(layers.rows))
    return "".join(out)


def _candidates_markdown(quantization: dict | None) -> str:
    """The account of export's int8 search in the markdown report: every candidate tried, the one chosen."""
    if not quantization or not quantization.get("candidates"):
        return ""
    validation = quantization["validation"]
    rows = [{"format": c["format"], "candidate": c["name"], "from": c.get("base") or "-", "how": c["detail"],
             "drop_pp": c["accuracy_drop_pp"], "agreement": c["top1_agreement"],
             "ties": c.get("tied", "-"), "bytes": c["bytes"],
             "p50_us": c["p50_us"], "float layers": ", ".join(c["float_layers"]) or "-",
             "float share": c["float_share"] if c["float_share"] is not None else "-",
             "chosen": "yes" if c["chosen"] else ""} for c in quantization["candidates"]]
    firmware = quantization.get("firmware")
    floats = ", ".join(f"{k} {v} us" for k, v in (quantization.get("float_p50_us") or {}).items() if v)
    return ("\n## How the int8 models were made\n\n"
            f"Candidates in order of cost, judged on {validation['count']} validation images ({validation['source']}; "
            f"float accuracy {validation['float_accuracy']:.4f}); the first that meets the gates is chosen. "
            f"p50: batch 1, one thread, on the machine that exported (float: {floats or '-'}). From: the candidate "
            f"a repair started from. Float share: the "
            f"part of the batch-1 latency spent in the layers left in float. Ties: images whose int8 top-1 differs "
            f"from the float's while the float's class shares the top int8 output value.\n\n" + markdown_table(rows)
            + ("" if firmware is None else
               f"\nThe firmware (TFLM runs full-int8 only) gets `model_int8_firmware.tflite`: {firmware['name']}, "
               f"drop {firmware['accuracy_drop_pp']} pp, agreement {firmware['top1_agreement']:.2%} on the "
               f"validation images.\n"))


LAYER_NOTES = {
    "tflite-int8": "Error of each quantized tensor against its float value, in units of its quantization step "
                   "(rmse/scale; 0.29 is the ideal of uniform rounding); TFLite's QuantizationDebugger.",
    "onnx-int8": "Signal-to-quantization-noise ratio of each activation, in dB (higher is better): against the "
                 "float model's same tensor (the error accumulated so far), and against its own value before "
                 "quantization; ONNX Runtime's qdq_loss_debug.",
}


STAGE = Stage(
    name="verify", help="cross-check every exported model against the float model",
    description="Run the float reference (Keras on the host, model_f32.tflite without TensorFlow) and every "
                "exported model on the held-out test set. Writes RUN/verify.json, verify.md and confusion_*.png. "
                "On a device, give the bundle instead: its models against its float model on --data or its "
                "golden images, no TensorFlow (--out writes verify.json). Exit 1 if a gate fails.",
    settings=VerifyConfig, run=verify, report=VerifyReport, render=render, failures=failures,
    output=lambda run: run.verify)
