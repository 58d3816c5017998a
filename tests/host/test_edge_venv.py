"""The device story end to end: a fresh venv with only the `edge` extra (no TensorFlow)."""

import json
import subprocess
import sys

import pytest

from helpers import ROOT, write_csv


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("edge") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"{ROOT}[edge]"],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv / "bin"


def test_edge_venv_has_no_tensorflow(edge_venv):
    done = subprocess.run([str(edge_venv / "python"), "-c", "import tensorflow"], capture_output=True, text=True)
    assert done.returncode != 0 and "No module named 'tensorflow'" in done.stderr
    freeze = subprocess.run([str(edge_venv / "pip"), "freeze"], capture_output=True, text=True).stdout.lower()
    assert "ai-edge-litert" in freeze and "onnxruntime" in freeze and "tensorflow" not in freeze


def test_selftest_and_predict_on_the_device_side(edge_venv, bundle_file, test_set, tmp_path):
    done = subprocess.run([str(edge_venv / "edgefashion"), "selftest", str(bundle_file)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith("passed, 0 failed")
    rows = [[int(l)] + img.ravel().tolist() for img, l in zip(test_set.images[:20], test_set.labels[:20])]
    csv = write_csv(tmp_path / "t.csv", rows)
    done = subprocess.run([str(edge_venv / "edgefashion"), "predict", str(bundle_file), str(csv), "--json"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"]["backend"] == "ai_edge_litert" and len(result["predictions"]) == 20
    done = subprocess.run([str(edge_venv / "edgefashion"), "bench", str(bundle_file), "--runs", "5", "--min-time", "0",
                           "--out", str(tmp_path / "b.json")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
