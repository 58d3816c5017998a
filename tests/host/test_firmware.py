"""The int8 model on the real TensorFlow Lite Micro interpreter (tflite-micro, x86_64 only)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from edgefashion.device.numpy_interpreter import NumpyInterpreter
from edgefashion.device.runtime import Model
from edgefashion.mcu import RESOLVER_METHODS, TARGET_NAMES
from edgefashion.host.firmware import measure_arena, run_tflm
from helpers import ROOT, cli

tflm = pytest.importorskip("tflite_micro.python.tflite_micro.runtime", reason="tflite-micro: x86_64 Linux only")
ASSETS = ROOT / "firmware_assets"
FOREIGN = ROOT / "tests" / "fixtures" / "foreign"


def test_firmware_stage_report_and_header(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    done = cli("firmware", run, "--firmware-images", 200, "--target", "nrf52840", check=0)
    assert "arena" in done.stdout and "nrf52840" in done.stdout and "not counted" in done.stdout
    report = json.loads((run / "firmware" / "firmware.json").read_text())
    assert report["images"] == 200 and 0 < report["accuracy"] <= 1 and report["tflm_version"]
    assert report["ops"]["CONV_2D"] == 3 and report["ops"]["FULLY_CONNECTED"] == 2
    assert report["arena_recommended_bytes"] >= report["arena_bytes"] * 1.1 > 0
    assert {t["target"] for t in report["targets"]} == set(TARGET_NAMES)
    assert report["input"]["zero_point"] == -128 and report["output"]["scale"] == pytest.approx(1 / 256)
    assert report["values"] == 2000 and report["max_diff_steps"] >= 0
    # a budget the model cannot meet is a failed check, exit 1
    small = cli("firmware", run, "--firmware-images", 20, "--ram-kb", 8, "--flash-kb", 64)
    assert small.returncode == 1 and "FAILED: custom: does not fit" in small.stderr


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_header_compiles_and_registers_exactly_the_models_ops(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cli("firmware", run, "--firmware-images", 10, check=0)
    folder = run / "firmware"
    report = json.loads((folder / "firmware.json").read_text())
    methods = "\n".join(f'  int {m}() {{ std::printf("{m}\\n"); return 0; }}' for m in sorted(set(RESOLVER_METHODS.values())))
    main = tmp_path / "main.cc"
    main.write_text('#include <cstdio>\n#include <cstdint>\n#include "model_int8_data.h"\n'
                    f"struct Recorder {{\n{methods}\n}};\n"
                    "int main() { Recorder r; bool ok = RegisterModelOps(r);\n"
                    '  std::printf("%d %d %d %d %d\\n", ok, kNumOps, kTensorArenaSize, kTensorArenaMeasured,\n'
                    "              (int)(reinterpret_cast<std::uintptr_t>(g_model_int8) % 16)); }\n")
    exe = tmp_path / "main"
    subprocess.run(["g++", "-std=c++17", "-I", str(folder), str(main), str(folder / "model_int8_data.cc"), "-o",
                    str(exe)], check=True, capture_output=True)
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    ok, ops, arena, measured, alignment = lines[-1].split()
    assert ok == "1" and int(ops) == len(report["ops"]) and alignment == "0"
    assert int(arena) == report["arena_recommended_bytes"] and int(measured) == report["arena_bytes"]
    expected = [RESOLVER_METHODS[op] for op in report["ops"]]
    assert lines[:-1] == expected  # each op of the model, once, nothing else


def test_committed_model_on_tflm(few_images):
    """firmware_assets: TFLM reproduces the recorded arena, and its outputs are the TFLM arithmetic."""
    recorded = json.loads((ASSETS / "firmware.json").read_text())
    path = ASSETS / "model_int8.tflite"
    ours = run_tflm(tflm, path, Model(path).prepare(few_images.images))
    # bit-exact with TFLite's reference arithmetic as TFLM does it (dense layers rounded twice) ...
    tflm_flavor = NumpyInterpreter(path.read_bytes(), path.name, flavor="tflm")
    assert np.array_equal(ours, tflm_flavor.run(Model(path, backend="numpy").prepare(few_images.images)))
    # ... and within the recorded difference of LiteRT's reference kernels (which round them once)
    reference = Model(path, kernels="reference")
    litert = reference.run(reference.prepare(few_images.images))
    assert (ours.argmax(1) == litert.argmax(1)).all()
    assert np.abs(ours.astype(int) - litert.astype(int)).max() <= max(recorded["max_diff_steps"], 1)
    arena = measure_arena(tflm, path)["total"]
    assert abs(arena - recorded["arena_bytes"]) <= 0.03 * recorded["arena_bytes"]


def test_firmware_of_any_full_int8_model_file(tmp_path):
    """A model edgefashion did not make: arena, ops and verdicts, no accuracy, nothing written."""
    model = FOREIGN / "rgb32_5_int8.tflite"
    done = cli("firmware", model, "--json", cwd=tmp_path, check=0)
    report = json.loads(done.stdout)
    assert report["input"]["shape"] == [1, 32, 32, 3] and report["ops"]["DEPTHWISE_CONV_2D"] == 1
    assert 0 < report["arena_bytes"] < report["arena_recommended_bytes"] and len(report["targets"]) >= 6
    tight = cli("firmware", model, "--ram-kb", 8, "--flash-kb", 64, cwd=tmp_path)
    assert tight.returncode == 1 and "FAILED: custom: does not fit" in tight.stderr and "accuracy: not measured" in tight.stdout
    floating = cli("firmware", FOREIGN / "nchw_f32.onnx", cwd=tmp_path)
    assert floating.returncode == 2 and "TFLM runs full-integer int8 .tflite models" in floating.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_users_file_in_the_firmware_folder_is_kept(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("firmware"))
    (run / "firmware").mkdir()
    (run / "firmware" / "main.c").write_text("int main(void) { return 0; }\n")
    done = cli("firmware", run, check=2)
    assert "firmware: holds files edgefashion did not write (main.c)" in done.stderr
    assert sorted(p.name for p in (run / "firmware").iterdir()) == ["main.c"]
