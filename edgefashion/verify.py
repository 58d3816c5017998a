"""Cross-check: every exported model against the float model on held-out images, with gates.

The reference is the Keras model on the host, or model_f32.tflite on a device without TensorFlow.
Metrics are plain numpy so they can be checked on hand-made predictions.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import LABELS, NUM_CLASSES, cpu, data
from .artifacts import exported_models
from .console import Progress, step
from .errors import InputError
from .files import read_json, write_json, write_text
from .report import markdown_table, plot_confusion

# --- metrics ------------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int = NUM_CLASSES) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels.astype(np.int64) * k + predicted, minlength=k * k).reshape(k, k)


def per_class_accuracy(matrix: np.ndarray) -> list[float | None]:
    totals = matrix.sum(axis=1)
    return [float(matrix[i, i] / totals[i]) if totals[i] else None for i in range(len(matrix))]


def compare(probs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of `probs`, and how far it is from the reference's probabilities."""
    predicted, ref_predicted = probs.argmax(1), reference.argmax(1)
    accuracy, ref_accuracy = float((predicted == labels).mean()), float((ref_predicted == labels).mean())
    matrix = confusion_matrix(labels, predicted)
    per_class, ref_per_class = per_class_accuracy(matrix), per_class_accuracy(confusion_matrix(labels, ref_predicted))
    diff = np.abs(probs.astype(np.float64) - reference)
    norms = np.linalg.norm(probs, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.sum(probs.astype(np.float64) * reference, axis=1) / np.maximum(norms, 1e-12)
    return {
        "accuracy": accuracy,
        "accuracy_drop_pp": round(100 * (ref_accuracy - accuracy), 4),
        "top1_agreement": float((predicted == ref_predicted).mean()),
        "per_class_accuracy": dict(zip(LABELS, per_class)),
        "per_class_drop_pp": {label: None if a is None or r is None else round(100 * (r - a), 4)
                              for label, a, r in zip(LABELS, per_class, ref_per_class)},
        "confusion_matrix": matrix.tolist(),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff": float(diff.max()),
        "cosine_similarity_mean": float(cosine.mean()),
        "cosine_similarity_min": float(cosine.min()),
    }


@dataclass(frozen=True)
class Gates:
    """The one set of pass/fail limits for exported models, used by export, verify and run."""

    max_drop_pp: float = 1.0       # accuracy drop vs the float model, percentage points
    min_agreement: float = 0.98    # top-1 agreement with the float model, a fraction
    float_tolerance: float = 1e-4  # float models: max |p - p_float|

    HELP = {"max_drop_pp": "largest accuracy drop of an int8 model vs the float model, in percentage points",
            "min_agreement": "smallest top-1 agreement of an int8 model with the float model, "
                             "a fraction (0.98) or a percentage (98)",
            "float_tolerance": "largest |p - p_float| of a float model"}

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
        if fmt.endswith("f32") and "max_abs_diff" in result and result["max_abs_diff"] > self.float_tolerance:
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

@dataclass
class VerifyConfig:
    run: Path
    data: Path | None = None         # test CSV or IDX folder; default: the run's test set
    gates: Gates = Gates()
    reference: str = "auto"          # auto | keras | tflite-f32
    batch_size: int = 500
    threads: int = 1
    layer_report: bool = True        # per-layer int8 error table (host only)
    verbose: bool = False

    def validate(self) -> None:
        self.gates.validate()
        if self.reference not in ("auto", "keras", "tflite-f32"):
            raise InputError(f"--reference {self.reference!r}, expected auto, keras or tflite-f32")


def load_test_set(run: Path, path: Path | None) -> data.Dataset:
    if path is None:
        config = run / "config.json"
        trained = read_json(config).get("test") if config.is_file() else None
        source = trained.get("source") if trained else None
        path = Path(source) if source and Path(source).exists() else None
    dataset = data.load(path, "test")
    if dataset.labels is None:
        raise InputError(f"{dataset.source}: verify needs a label column")
    return dataset


def verify(config: VerifyConfig) -> dict:
    """Run everything, write RUN/verify.json, verify.md and confusion plots; return verify.json."""
    from .runtime import Model

    config.validate()
    run = Path(config.run)
    models = exported_models(run)
    test = load_test_set(run, config.data)
    started = time.monotonic()
    ref_format, reference = _reference(config, run, models, test)
    results = []
    with Progress(len(models), "verify") as progress:
        for fmt, path in models.items():
            model = Model(path, threads=config.threads)
            t0 = time.monotonic()
            probs = model.predict_proba(test.images, batch_size=config.batch_size)
            result = {"format": fmt, "file": path.name, "backend": model.backend,
                      "seconds": round(time.monotonic() - t0, 2), **compare(probs, reference, test.labels)}
            result["failures"] = config.gates.failures(fmt, result)
            result["passed"] = not result["failures"]
            results.append(result)
            progress.update()
    report = {
        "reference": {"format": ref_format, "accuracy": float((reference.argmax(1) == test.labels).mean()),
                      "samples": len(test), "source": test.source, "sha256": test.sha256},
        "gates": asdict(config.gates),
        "cpu": cpu.describe(),
        "models": results,
        "passed": all(r["passed"] for r in results),
        "seconds": round(time.monotonic() - started, 1),
    }
    layers = _layer_errors(config, run) if config.layer_report else None
    write_json(run / "verify.json", report)
    write_text(run / "verify.md", render_markdown(report, layers))
    for r in results:
        plot_confusion(r["confusion_matrix"], LABELS, f"{r['format']}: accuracy {r['accuracy']:.4f}",
                       run / f"confusion_{r['format']}.png")
    return report


def _reference(config: VerifyConfig, run: Path, models: dict, test: data.Dataset):
    use_keras = config.reference == "keras" or (
        config.reference == "auto" and (run / "model.keras").is_file()
        and importlib.util.find_spec("tensorflow") is not None)
    if use_keras:
        from .host.model import load_model

        step("reference: Keras model.keras")
        keras_model = load_model(run / "model.keras", config.verbose)
        return "keras", keras_model.predict(data.prepare(test.images), batch_size=config.batch_size, verbose=0)
    if "tflite-f32" not in models:
        raise InputError(f"{run}: no Keras (TensorFlow not installed) and no model_f32.tflite to use as the reference")
    from .runtime import Model

    step("reference: model_f32.tflite")
    return "tflite-f32", Model(models["tflite-f32"], threads=config.threads).predict_proba(
        test.images, batch_size=config.batch_size)


def _layer_errors(config: VerifyConfig, run: Path) -> list[dict] | None:
    """Per-layer int8 error table on the host; None on a device (no TensorFlow)."""
    if importlib.util.find_spec("tensorflow") is None or not (run / "model.keras").is_file():
        return None
    from .host.layer_errors import layer_errors

    step("per-layer quantization error (QuantizationDebugger)")
    return layer_errors(run, config.verbose)


def accuracies(report: dict) -> dict:
    """{format: accuracy} for the reference and every model of a verify.json."""
    return {report["reference"]["format"]: report["reference"]["accuracy"],
            **{m["format"]: m["accuracy"] for m in report["models"]}}


def summary_rows(report: dict) -> list[dict]:
    rows = [{"model": report["reference"]["format"] + " (reference)", "accuracy": report["reference"]["accuracy"],
             "drop_pp": None, "agreement": None, "max_abs_diff": None, "cosine_min": None, "result": "-"}]
    for r in report["models"]:
        rows.append({"model": r["format"], "accuracy": r["accuracy"], "drop_pp": r["accuracy_drop_pp"],
                     "agreement": r["top1_agreement"], "max_abs_diff": r["max_abs_diff"],
                     "cosine_min": r["cosine_similarity_min"], "result": "PASS" if r["passed"] else "FAIL"})
    return rows


def render_markdown(report: dict, layers: list[dict] | None) -> str:
    ref = report["reference"]
    out = ["# Cross-check against the float model\n\n",
           f"Reference: **{ref['format']}**, accuracy {ref['accuracy']:.4f} on {ref['samples']} images "
           f"from `{ref['source']}`. Gates: accuracy drop <= {report['gates']['max_drop_pp']} pp, "
           f"top-1 agreement >= {report['gates']['min_agreement']:.0%}. "
           f"Overall: **{'PASS' if report['passed'] else 'FAIL'}**.\n\n",
           markdown_table(summary_rows(report)),
           "\n## Per-class accuracy drop (pp)\n\n"]
    per_class = [{"class": label, **{r["format"]: r["per_class_drop_pp"][label] for r in report["models"]}}
                 for label in LABELS]
    out.append(markdown_table(per_class))
    for r in report["models"]:
        out.append(f"\n![confusion matrix {r['format']}](confusion_{r['format']}.png)\n")
        if r["failures"]:
            out.append(f"- {r['format']} failed: " + "; ".join(r["failures"]) + "\n")
    if layers:
        out.append("\n## Layers that lose the most in int8 (model_int8.tflite)\n\n")
        out.append("Error of each quantized tensor against its float value, in units of its "
                   "quantization step (rmse/scale; 0.29 is the ideal of uniform rounding).\n\n")
        out.append(markdown_table(layers))
    return "".join(out)
