"""int8 results that do not depend on the CPU: the run's models and bundles on the other x86
kernel paths (AVX2 without VNNI, SSE4.2) under qemu user emulation. `make isa-check` is the
full-size version of this."""

import json
import platform
import subprocess
import sys
import warnings

import pytest

from helpers import ROOT

pytestmark = [pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 paths: x86_64 only")]


def test_every_x86_path_gives_the_same_int8_and_passes_every_golden(tiny_run, tmp_path):
    out = tmp_path / "isa.json"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "isa_check.py"), str(tiny_run), "--images", "100",
                           "--golden", "20", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    paths = {r["path"]: r for r in report["paths"]}
    # a -cpu model qemu cannot run numpy under on this host is left out, and said (never Haswell)
    left_out = {f"qemu -cpu {cpu}" for cpu in report["not_emulable"]}
    assert "Haswell" not in report["not_emulable"] and all("import numpy" in w for w in report["not_emulable"].values())
    assert set(paths) | left_out == {"native", "qemu -cpu Haswell", "qemu -cpu Nehalem"}
    if left_out:
        warnings.warn(f"left out: {report['not_emulable']}")
    # the emulated CPUs really take the other kernel paths
    assert paths["qemu -cpu Haswell"]["cpu"]["int8_path"].startswith("x86 AVX2 without VNNI")
    if "qemu -cpu Nehalem" in paths:
        assert paths["qemu -cpu Nehalem"]["cpu"]["int8_path"].startswith("x86 SSE")
    for row in report["rows"]:
        if row["model"] == "onnx-int8":  # the same integers on every path
            assert row["max_diff_vs_native"] == 0 and row["values_differing"] == 0, row
    assert all(s["passed"] for r in report["paths"] for s in r["selftest"].values())
    assert len(report["paths"][0]["selftest"]) == 2  # a bundle made here and one made on Haswell
