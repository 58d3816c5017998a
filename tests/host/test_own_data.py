"""Data and models edgefashion did not make, end to end through `run`: scikit-learn's handwritten
digits (8x8 grey, its own held-out split) and a colour image folder of real photos (3 classes)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, cli

sys.path.insert(0, str(ROOT / "tools"))
import digits_to_csv  # noqa: E402
import photo_patches  # noqa: E402


EDGE = ROOT / ".venv-edge" / "bin" / "edgefashion"  # the device side, without TensorFlow (make test builds it)


def edge_cli(*args, check=0):
    if not EDGE.is_file():
        pytest.fail("the device venv is missing: make .venv-edge/.installed")
    done = subprocess.run([str(EDGE), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == check, done.stdout + done.stderr
    return done


def test_digits_end_to_end_with_a_held_out_split(tmp_path):
    csv = digits_to_csv.write(tmp_path / "digits")
    run = tmp_path / "run"
    done = cli("train", "--data", csv, "--out", run, "--epochs", 12, check=0)
    assert "holding out 359 of its 1797 rows" in done.stderr
    trained = (run / "model.keras").read_bytes()
    done = cli("run", "--out", run, check=0)  # goes on from the training `train` did, never over it
    assert "was trained by `edgefashion train` or `tune`" in done.stderr and "stage train" not in done.stderr
    assert (run / "model.keras").read_bytes() == trained
    config = json.loads((run / "config.json").read_text())
    assert config["image_shape"] == [8, 8, 1] and config["labels"][:3] == ["zero", "one", "two"]
    verify = json.loads((run / "verify.json").read_text())
    accuracy = {m["format"]: m["accuracy"] for m in verify["models"]}
    assert verify["reference"]["samples"] == 359 and verify["reference"]["accuracy"] > 0.85  # chance is 0.1
    assert verify["passed"] and accuracy["tflite-int8"] > 0.85
    assert set(verify["models"][0]["per_class_accuracy"]) == set(digits_to_csv.NAMES)
    header = (run / "firmware" / "model_int8_data.h").read_text()
    assert "kNumClasses = 10" in header and "8x8 grayscale" in header
    assert '"zero", "one"' in (run / "firmware" / "model_int8_data.cc").read_text()
    # on the device side: no TensorFlow, the bundle's own classes and image size
    bundle = run / "edgefashion-bundle.tar.gz"
    selftest = edge_cli("selftest", bundle, check=0)
    assert "golden model_int8.tflite (reference kernels): max 0 quantization steps" in selftest.stdout
    held = np.load(run / "test_split.npz")["indices"][:5]
    rows = csv.read_text().splitlines()
    (tmp_path / "five.csv").write_text("\n".join([rows[0], *(rows[i + 1] for i in held)]) + "\n")
    predicted = json.loads(edge_cli("predict", bundle, tmp_path / "five.csv", "--json", check=0).stdout)
    assert [p["truth"] for p in predicted["predictions"]] == [digits_to_csv.NAMES[int(rows[i + 1].split(",")[0])]
                                                              for i in held]
    assert predicted["model"]["labels"] == list(digits_to_csv.NAMES) and predicted["accuracy"] >= 0.6


def test_colour_image_folder_end_to_end(tmp_path):
    counts = photo_patches.write(tmp_path / "photos")
    classes = sorted(counts["train"])
    run = tmp_path / "run"
    cli("run", "--data", tmp_path / "photos", "--out", run, "--epochs", 3, "--min-agreement", 0.9,
        "--max-drop", 5, "--calibration", 200, check=0)
    config = json.loads((run / "config.json").read_text())
    assert config["image_shape"] == [32, 32, 3] and config["labels"] == classes
    assert config["test"]["source"].endswith("test") and config["test"]["samples"] == sum(counts["test"].values())
    verify = json.loads((run / "verify.json").read_text())
    assert verify["reference"]["accuracy"] > 1.5 / len(classes)  # better than chance on unseen regions
    manifest = json.loads((run / "export" / "export.json").read_text())
    assert manifest["labels"] == classes
    predicted = json.loads(cli("predict", run, tmp_path / "photos" / "test" / classes[0] / f"{classes[0]}_0000.png",
                               "--json", "--top", 3, check=0).stdout)
    assert predicted["predictions"][0]["label"] in classes and len(predicted["predictions"][0]["top"]) == 3
