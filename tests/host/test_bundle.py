"""A bundle made from a freshly trained and exported run (the device tier checks the committed one)."""

import json
import tarfile

from helpers import cli


def test_bundle_contents_and_manifest(bundle_file):
    with tarfile.open(bundle_file) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"model_int8.tflite", "model_f32.tflite", "model_int8.onnx", "model_f32.onnx", "labels.json",
            "golden.npz", "manifest.json"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())
    assert manifest["labels"][9] == "Ankle boot" and manifest["input"]["layout"] == "NHWC"
    assert manifest["golden"]["count"] == 50 and manifest["versions"]["edgefashion"]
    assert manifest["schema_version"] == 1


def test_selftest_passes(bundle_file):
    done = cli("selftest", bundle_file, check=0)
    lines = done.stdout.strip().splitlines()
    assert all(line.startswith("PASS") for line in lines[:-1]) and lines[-1].endswith("0 failed")
    assert sum(line.startswith("PASS  golden") for line in lines) == 5 and sum("int8 vs float" in line for line in lines) == 2
