import importlib.util
import json
from dataclasses import replace

import pytest

from edgefashion.device import bench
from helpers import FIXTURES, cli


def test_bench_json_schema_and_sane_values(fixture_run, tmp_path):
    out = tmp_path / "bench.json"
    cli("bench", fixture_run / "export" / "model_int8.tflite", fixture_run / "export" / "model_f32.tflite",
        "--batch", "1,4", "--threads", "1,2", "--runs", 30, "--warmup", 3, "--min-time", 0, "--out", out, check=0)
    report = json.loads(out.read_text())
    assert {"machine", "cpu_model", "cores", "os", "python", "versions", "cpu_governor", "cpu_freq_mhz",
            "board_model", "soc_temp_c", "throttled"} <= set(report["environment"])
    assert len(report["results"]) == 2 * 2 * 2
    for r in report["results"]:
        assert {"file", "format", "runtime", "threads", "batch", "size_bytes", "init_ms", "first_ms",
                "latency_us", "throughput_ips", "peak_rss_mb"} <= set(r)
        lat = r["latency_us"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1e6 / lat["mean"], rel=0.01)
        assert r["runs"] >= 30 and r["peak_rss_mb"] > 10 and r["init_ms"] > 0
    assert {(r["batch"], r["threads"]) for r in report["results"]} == {(1, 1), (1, 2), (4, 1), (4, 2)}
    assert {c["family"] for c in report["comparison"]} == {"tflite"} and len(report["comparison"]) == 4
    assert out.with_suffix(".csv").read_text().startswith("file,format,runtime")
    if importlib.util.find_spec("matplotlib"):  # plots are skipped where matplotlib is not installed
        assert out.with_suffix(".png").stat().st_size > 1000


def test_run_directory_defaults_to_run_bench_json(fixture_run):
    cli("bench", fixture_run, "--runs", 5, "--warmup", 1, "--min-time", 0, check=0)
    formats = {r["format"] for r in json.loads((fixture_run / "bench.json").read_text())["results"]}
    assert formats == {"tflite-int8", "tflite-f32", "onnx-f32", "onnx-int8"}


def test_unreadable_environment_is_null(monkeypatch):
    monkeypatch.setattr(bench, "_read", lambda path: None)
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    env = bench.environment()
    assert env.cpu_governor is None and env.board_model is None and env.soc_temp_c is None
    assert env.throttled is None and env.cpu_freq_mhz is None
    # whether int8 has a fast path is this CPU's own answer; pin it so the test holds on every CPU
    fast = replace(env, cpu=replace(env.cpu, int8_fast_path=True))
    slow = replace(env, cpu=replace(env.cpu, int8_fast_path=False, int8_path="x86 SSE"))
    assert bench.environment_warnings(fast) == []
    assert bench.environment_warnings(replace(fast, cpu_governor="powersave"))[0].startswith("CPU governor")
    assert bench.environment_warnings(slow) == [
        "this CPU has no int8 dot-product instructions (x86 SSE): int8 models may be little or no faster than "
        "float here, and at larger batches even slower"]


def test_bad_input_refused(fixture_run, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for args, message in [((tmp_path / "notes.txt",), "not a model"),
                          ((tmp_path / "nothing.tflite",), "not found"),
                          ((fixture_run / "export" / "model_int8.tflite", "--batch", "0"), "not a positive integer"),
                          ((fixture_run / "export" / "model_int8.tflite", "--threads", "two"), "is not an integer")]:
        done = cli("bench", *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    (tmp_path / "broken.tflite").write_bytes(b"\x00" * 4 + b"TFL3" + b"\x00" * 100)
    done = cli("bench", tmp_path / "broken.tflite", "--out", tmp_path / "b.json")
    assert done.returncode == 2 and "not a valid TFLite model" in done.stderr
    assert not (tmp_path / "b.json").exists()


def test_peak_rss_is_the_workers_own(fixture_run, tmp_path):
    """The worker reports its own peak, not the peak of the process that started it."""
    ballast = bytearray(600 * 2**20)
    ballast[:: 4096] = b"\x01" * len(ballast[:: 4096])  # touch every page: 600 MB resident here
    report, _ = bench.bench(bench.BenchConfig(runs=5, warmup=1, min_time=0), [fixture_run / "export" / "model_int8.tflite"],
                            tmp_path / "b.json")
    assert 10 < report.results[0].peak_rss_mb < 400
    del ballast


def test_compare_two_bench_files(fixture_models, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (a, b):
        cli("bench", fixture_models, "--runs", 5, "--warmup", 1, "--min-time", 0, "--out", out, check=0)
    report = json.loads(b.read_text())
    report["environment"]["emulated"] = "qemu-aarch64"
    b.write_text(json.dumps(report))
    done = cli("compare", a, b, "--plot", tmp_path / "c.png", check=0)
    assert "D2: b.json:" in done.stdout and "EMULATED (qemu-aarch64)" in done.stdout
    assert "tflite int8/f32" in done.stdout
    assert (tmp_path / "c.png").is_file() or "matplotlib not installed" in done.stderr  # no matplotlib on a device
    assert cli("compare", a, "--batch", 64).returncode == 2
    selftest = tmp_path / "selftest.json"
    selftest.write_text(cli("selftest", FIXTURES / "tiny-bundle.tar.gz", "--json", check=0).stdout)
    mixed = cli("compare", a, selftest, "--plot", tmp_path / "d.png", check=0).stdout
    assert "S1: selftest.json" in mixed and "PASS" in mixed
    (tmp_path / "other.json").write_text("{}")
    assert cli("compare", tmp_path / "other.json").returncode == 2


def test_profile_per_operator(fixture_models, tmp_path):
    out = tmp_path / "bench.json"
    done = cli("bench", fixture_models, "--profile", "--runs", 20, "--warmup", 1, "--min-time", 0, "--out", out,
               check=0)
    profiles = json.loads(out.read_text())["profiles"]
    assert set(profiles) == {"model_int8.tflite", "model_f32.tflite", "model_f32.onnx", "model_int8.onnx"}
    tflite = profiles["model_int8.tflite"]
    assert [op["type"] for op in tflite["ops"]][0] == "CONV_2D" and tflite["ops"][0]["dtype"] == "int8"
    assert "QLinearConv" in {op["type"] for op in profiles["model_int8.onnx"]["ops"]}
    for prof in profiles.values():
        assert prof["total_us"] > 0 and prof["model_us"] > 0 and 0.3 < prof["sum_vs_model"] < 10
        assert abs(sum(op["share"] for op in prof["ops"]) - 1) < 0.01
    assert "per operator at batch 1" in done.stdout


def test_profile_on_the_numpy_backend(fixture_run, tmp_path):
    """bench --backend numpy --profile: the numpy backend's own per-operator times, every operator
    but those that follow from the input shape alone, with their MACs and the float32 peak (its
    products are float32 sums of integers)."""
    from edgefashion.device.tflite_file import read

    model, out = fixture_run / "export" / "model_int8.tflite", tmp_path / "bench.json"
    done = cli("bench", model, "--backend", "numpy", "--profile", "--runs", 20, "--warmup", 1, "--min-time", 0,
               "--out", out, check=0)
    report = json.loads(out.read_text())
    prof = report["profiles"]["model_int8.tflite"]
    assert "numpy backend's own timer" in prof["method"] and "numpy backend's own timer" in done.stdout
    graph = read(model.read_bytes(), model.name)
    shaped = {"SHAPE", "STRIDED_SLICE", "PACK"}
    assert [op["type"] for op in prof["ops"]] == [op.op for op in graph.operators if op.op not in shaped]
    assert all(op["us"] > 0 for op in prof["ops"]) and 0.3 < prof["sum_vs_model"] < 10
    assert sum(op["macs"] or 0 for op in prof["ops"]) == report["results"][0]["macs_per_image"]
    if prof["peak"]:
        assert prof["peak"]["gmacs"] == report["peaks"]["float32"]["gmacs"]


def _conv_dense_macs(path) -> int:
    """The MACs of a conv/dense .tflite worked out by hand from its tensors' shapes."""
    from edgefashion.device.tflite_file import read
    graph = read(path.read_bytes(), path.name)
    total = 0
    for op in graph.operators:
        out, w = graph.tensors[op.outputs[0]].shape, graph.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
        if op.op == "CONV_2D":
            total += out[1] * out[2] * out[3] * w[1] * w[2] * w[3]
        elif op.op == "FULLY_CONNECTED":
            total += out[-1] * w[-1]
    return total


def test_macs_and_peak_share(fixture_models, fixture_run, tmp_path):
    out = tmp_path / "bench.json"
    done = cli("bench", fixture_models, "--profile", "--runs", 20, "--warmup", 1, "--min-time", 0, "--out", out,
               check=0)
    report = json.loads(out.read_text())
    expected = _conv_dense_macs(fixture_run / "export" / "model_int8.tflite")
    assert expected > 10_000
    by_format = {r["format"]: r for r in report["results"]}
    assert {f: r["macs_per_image"] for f, r in by_format.items()} == {f: expected for f in by_format}
    for r in by_format.values():  # achieved work is MACs over the p50 per image
        assert r["gmacs"] == pytest.approx(expected / r["latency_per_image_us"]["p50"] / 1e3, rel=0.01)
        if r["peak_gmacs"]:
            assert 0 < r["peak_share"] < 1 and r["peak_share"] == pytest.approx(r["gmacs"] / r["peak_gmacs"], rel=0.01)
    assert report["profiles"]["model_int8.tflite"]["macs"] == expected
    assert sum(op["macs"] for op in report["profiles"]["model_f32.tflite"]["ops"]) == expected
    assert "M MAC per image" in done.stdout and "GMAC/s" in done.stdout


def test_numpy_backend_holds_blas_to_its_threads(fixture_run):
    """OpenBLAS starts a thread per core; after a numpy-backend run it has the backend's one."""
    script = ("from edgefashion.device.runtime import Model; from edgefashion.device import blas; import numpy as np;"
              f"m = Model({str(fixture_run / 'export' / 'model_int8.tflite')!r}, backend='numpy');"
              "m.run(np.zeros((1, *m.input.shape[1:]), np.int8)); print(blas.threads_now())")
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={"OPENBLAS_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"})
    found = eval(done.stdout)  # noqa: S307 - our own printout
    assert found and all(lib["threads"] == 1 for lib in found), found
