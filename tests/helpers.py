"""Helpers shared by both tiers (tests/device runs without TensorFlow, tests/host with it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"   # made by tools/make_test_fixtures.py
MODELS = {"tflite-int8": "model_int8.tflite", "tflite-f32": "model_f32.tflite", "onnx-f32": "model_f32.onnx",
          "onnx-int8": "model_int8.onnx"}
# Loose gates for barely trained models: one of 100 calibration images is a whole percent, and a
# weak model's near-ties differ honestly between CPUs. Such runs test the plumbing; the gates are
# tested on known predictions (device/test_verify.py) and on the real model by `make demo`.
LOOSE_GATES = ("--min-agreement", 0.9, "--max-drop", 5)
# `make test-device-isa` runs the device tier under qemu-x86_64 -cpu MODEL; the CLI runs there too
QEMU_CPU = os.environ.get("EDGEFASHION_TEST_CPU")


def cli(*args, check: int | None = None, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m edgefashion ARGS` (under qemu -cpu $EDGEFASHION_TEST_CPU if set); optionally
    assert the exit code."""
    command = [sys.executable, "-m", "edgefashion", *map(str, args)]
    if QEMU_CPU:
        command = [shutil.which("qemu-x86_64-static") or "qemu-x86_64", "-cpu", QEMU_CPU, *command]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if QEMU_CPU:  # qemu's own notes on CPU features TCG lacks are not the program's output
        done.stderr = "".join(line for line in done.stderr.splitlines(keepends=True) if not line.startswith("qemu-"))
    if check is not None:
        assert done.returncode == check, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def write_csv(path: Path, rows: list[list], header: bool = True, newline: str = "\n") -> Path:
    lines = []
    if header:
        pixels = len(rows[0]) - 1 if rows else 784
        lines.append(",".join(["label"] + [f"pixel{i}" for i in range(1, pixels + 1)]))
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def labelled_rows(images, labels) -> list[list]:
    return [[int(label)] + image.ravel().tolist() for image, label in zip(images, labels)]


def sample_rows(n: int = 3, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    return [[int(rng.integers(0, 10))] + rng.integers(0, 256, 784).tolist() for _ in range(n)]


def check_bundle(bundle: Path, golden: int) -> None:
    """A bundle holds the four models, labels and golden vectors, all hashed, and passes selftest."""
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {*MODELS.values(), "labels.json", "golden.npz", "manifest.json"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"].values())
    assert manifest["labels"][9] == "Ankle boot" and manifest["input"]["layout"] == "NHWC"
    assert manifest["golden"]["count"] == golden and manifest["versions"]["edgefashion"]
    assert manifest["schema_version"] == 1
    lines = cli("selftest", bundle, check=0).stdout.strip().splitlines()
    assert all(line.startswith("PASS") for line in lines[:-1]) and lines[-1].endswith("0 failed")
    assert sum(line.startswith("PASS  golden") for line in lines) == 5
    assert sum("int8 vs float" in line for line in lines) == 2


def model_verdict(path: str, backend: str, kernels: str) -> tuple:
    """('ran', output bytes) or ('refused', the one-line error) for a model on one seeded input: what
    a backend makes of a model. Module-level, so that isolate.in_worker can run it in a worker."""
    from edgefashion.device.feed import bench_input
    from edgefashion.device.runtime import Model
    from edgefashion.errors import InputError, Unsupported

    try:
        model = Model(path, backend=backend, kernels=kernels, classifier=False)
        return "ran", np.asarray(model.run(bench_input(model, 1))).tobytes()
    except (InputError, Unsupported) as exc:
        return "refused", str(exc)
