"""The committed reference artifacts are intact, consistent and still the model they claim to be."""

import importlib.util
import json
import shutil
import subprocess

import pytest

from helpers import ROOT, cli
from edgefashion import LABELS
from edgefashion.files import sha256_file
from edgefashion.mcu import c_array_bytes
from edgefashion.device.runtime import Model

ASSETS = ROOT / "firmware_assets"


def test_hashes_match_manifest():
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        assert sha256_file(ASSETS / name) == entry["sha256"], name
        assert (ASSETS / name).stat().st_size == entry["bytes"], name


def test_c_array_equals_model_bytes():
    model = (ASSETS / "model_int8.tflite").read_bytes()
    assert c_array_bytes((ASSETS / "model_int8_data.cc").read_text()) == model


def test_reference_model_keeps_its_measured_accuracy(test_set):
    manifest = json.loads((ASSETS / "manifest.json").read_text())
    model = Model(ASSETS / "model_int8.tflite")
    assert model.format == "tflite-int8" and model.input.scale == pytest.approx(manifest["input"]["scale"])
    accuracy = float((model.predict(test_set.images).class_ids == test_set.labels).mean())
    assert accuracy == pytest.approx(manifest["accuracy"]["tflite-int8"], abs=1e-4)
    labels = (ASSETS / "labels.txt").read_text().splitlines()
    assert labels == manifest["labels"] == list(LABELS)


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_c_array_compiles_and_links(tmp_path):
    main = tmp_path / "main.cc"
    main.write_text('#include <cstdio>\n#include <cstdint>\n#include "model_int8_data.h"\n'
                    "int main() { std::printf(\"%u %d %s\\n\", g_model_int8_len,"
                    " (int)(reinterpret_cast<std::uintptr_t>(g_model_int8) % 16), g_labels[9]); }\n")
    exe = tmp_path / "main"
    subprocess.run(["g++", "-std=c++17", "-I", str(ASSETS), str(main), str(ASSETS / "model_int8_data.cc"),
                    "-o", str(exe)], check=True, capture_output=True)
    size, alignment, label = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split(" ", 2)
    assert int(size) == (ASSETS / "model_int8.tflite").stat().st_size
    assert alignment == "0" and label.strip() == "Ankle boot"


def test_firmware_without_tflite_micro_is_one_line(fixture_run):
    """The edge venv has no tflite-micro (x86_64 wheels only): one line, exit 2, nothing written."""
    if importlib.util.find_spec("tflite_micro") is not None:
        pytest.skip("tflite-micro is installed here")
    done = cli("firmware", fixture_run)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: tflite-micro (TensorFlow Lite Micro for the host; x86_64 Linux wheels only) is not installed; "
        "install it with: pip install 'edgefashion[host]'"]
    assert not (fixture_run / "firmware").exists()
