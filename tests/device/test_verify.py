import importlib.util
import json

import numpy as np
import pytest

from helpers import LOOSE_GATES, cli, labelled_rows, write_csv
from edgefashion import LABELS
from edgefashion.device import verify


def _probs(classes, k=10):
    out = np.full((len(classes), k), 0.01, np.float32)
    out[np.arange(len(classes)), classes] = 0.91
    return out


def test_metrics_on_known_predictions():
    labels = np.arange(100) % 10
    reference = _probs(labels)                 # the float model: always right
    predicted = labels.copy()
    predicted[[5, 17, 42]] = (labels[[5, 17, 42]] + 1) % 10   # disagrees on exactly 3 of 100
    result = verify.agreement_figures(_probs(predicted), reference, labels, list(LABELS))
    assert result["accuracy"] == pytest.approx(0.97)
    assert result["top1_agreement"] == pytest.approx(0.97)
    assert result["accuracy_drop_pp"] == pytest.approx(3.0)
    assert np.array(result["confusion_matrix"]).sum() == 100 and np.trace(result["confusion_matrix"]) == 97
    assert result["per_class_accuracy"]["Sandal"] == pytest.approx(0.9)   # label 5 lost one of 10
    assert result["per_class_drop_pp"]["Sandal"] == pytest.approx(10.0)
    assert result["max_abs_diff"] == pytest.approx(0.9)
    assert result["cosine_similarity_min"] < 0.1 < result["cosine_similarity_mean"]
    assert verify.Gates().failures("onnx-int8", result) == [
        "accuracy drop 3.00 pp > --max-drop 1 pp", "top-1 agreement 97.00% < --min-agreement 98.00%"]
    assert verify.Gates(max_drop_pp=3.0, min_agreement=0.97).failures("onnx-int8", result) == []
    # float models answer to the float tolerance only
    assert verify.Gates().failures("tflite-f32", result) == ["max |p - p_float| 9.00e-01 > --float-tolerance 0.0001"]
    assert verify.Gates(float_tolerance=1.0).failures("tflite-f32", result) == []


def test_gates_are_validated_and_accept_percentages():
    from edgefashion.cli import build_parser
    from edgefashion.errors import InputError

    args = build_parser().parse_args(["verify", "run", "--min-agreement", "99", "--max-drop", "0.5"])
    assert (args.min_agreement, args.max_drop_pp) == (0.99, 0.5)
    for bad in (verify.Gates(max_drop_pp=-1), verify.Gates(min_agreement=1.5), verify.Gates(float_tolerance=-1)):
        with pytest.raises(InputError):
            bad.validate()


def test_confusion_matrix_orientation():
    matrix = verify.confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), k=2)
    assert matrix.tolist() == [[1, 1], [0, 1]]   # rows true, columns predicted


def test_verify_writes_reports_and_exit_codes(fixture_run, few_images, tmp_path):
    subset = write_csv(tmp_path / "test.csv", labelled_rows(few_images.images, few_images.labels))
    cli("verify", fixture_run, "--data", subset, *LOOSE_GATES, check=0)
    report = json.loads((fixture_run / "verify.json").read_text())
    # no model.keras here (and no TensorFlow in this tier): the float TFLite model is the reference
    assert report["reference"]["format"] == "tflite-f32" and report["reference"]["samples"] == 300
    assert {m["format"] for m in report["models"]} == {"tflite-int8", "tflite-f32", "onnx-f32", "onnx-int8"}
    for m in report["models"]:
        assert {"accuracy", "accuracy_drop_pp", "top1_agreement", "per_class_accuracy", "confusion_matrix",
                "passed"} <= set(m)
        if m["format"].endswith("f32"):
            assert m["max_abs_diff"] <= 1e-4 and m["top1_agreement"] == 1.0
    markdown = (fixture_run / "verify.md").read_text()
    assert markdown.startswith("# Cross-check") and "Layers that lose the most in int8" in markdown
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None  # plots are skipped on a device
    assert (fixture_run / "confusion_tflite-int8.png").is_file() == has_matplotlib
    # an impossible gate fails with exit 1 and says which model, which figure and what to try
    done = cli("verify", fixture_run, "--data", subset, "--max-drop", 0, "--min-agreement", 1.0)
    strict = json.loads((fixture_run / "verify.json").read_text())
    assert done.returncode == 1 and not strict["passed"] and "FAILED: model_int8" in done.stderr
    assert "--min-agreement 100.00%" in done.stderr and "try more calibration images" in done.stderr
    assert strict["gates"] == {"max_drop_pp": 0.0, "min_agreement": 1.0, "float_tolerance": 1e-4}
    assert strict["cpu"]["int8_path"] and strict["cpu"]["features"]
    assert cli("verify", fixture_run, "--min-agreement", 150).returncode == 2  # neither fraction nor percentage
    assert cli("verify", fixture_run, "--reference", "keras").returncode == 2  # no Keras model here


def test_verify_a_bundle_on_the_device(fixture_bundle, tmp_path):
    """No TensorFlow, no run directory: the bundle's models against its float model."""
    out = tmp_path / "verify.json"
    done = cli("verify", fixture_bundle, "--out", out, "--json", *LOOSE_GATES)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads(out.read_text())
    assert report["reference"]["format"] == "tflite-f32" and report["reference"]["samples"] == 40
    assert {m["format"] for m in report["models"]} == {"tflite-int8", "onnx-f32", "onnx-int8"}
    assert all("warnings" in m for m in report["models"]) and "bundle tiny-bundle.tar.gz: sha256" in done.stderr
    assert cli("verify", fixture_bundle, "--out", fixture_bundle).returncode == 2  # never over an input


def test_a_run_on_own_data_without_a_test_set_is_not_verified_on_fashion_mnist(fixture_run):
    """config.json says the run was trained on the user's CSV with no test set: verify refuses to
    fall back on Fashion-MNIST's test images, in one line, and takes a test set given with --data."""
    from edgefashion.rundir import Run

    run = Run(fixture_run)
    config = {"settings": {"data": "/home/me/three_classes.csv"}, "dataset": {"source": "x", "sha256": "y"},
              "test": None, "best_epoch": 1, "val_accuracy": 0.9, "epochs_finished": 1, "interrupted": False,
              "fit_seconds": 1.0, "versions": {}, "platform": {}}
    run.config.write_text(json.dumps(config))
    done = cli("verify", fixture_run)
    assert done.returncode == 2 and "trained on /home/me/three_classes.csv without a test set" in done.stderr
    assert done.stderr.count("error:") == 1


def test_the_report_says_what_each_int8_candidate_started_from():
    def candidate(name, chosen=False, base="", floats=()):
        return {"format": "tflite-int8", "name": name, "detail": name, "accuracy_drop_pp": 0.1, "top1_agreement": 0.99,
                "tied": 0, "bytes": 5000, "p50_us": 10.0, "float_layers": list(floats), "float_share": None,
                "chosen": chosen, "base": base}
    quantization = {"validation": {"count": 2000, "source": "rows", "float_accuracy": 0.78}, "float_p50_us": {},
                    "candidates": [candidate("ptq"), candidate("adaround", base="ptq"),
                                   candidate("float-head", True, "adaround", ["probabilities"])]}
    rows = [line for line in verify._candidates_markdown(quantization).splitlines() if line.startswith("| tflite")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[1], c[2], c[-1]) for c in cells] == [("ptq", "-", ""), ("adaround", "ptq", ""),
                                                    ("float-head", "adaround", "yes")]
