"""Models edgefashion did not make (tests/fixtures/foreign, from tools/make_foreign_models.py): other
input shapes, a model that is not a classifier, an NCHW ONNX model. bench and bench --profile take
them on seeded random inputs of their declared shape; the numpy backend is exact or names the op."""

import json

import numpy as np
import pytest

from edgefashion.device.runtime import Model
from edgefashion.errors import InputError, Unsupported
from helpers import FIXTURES, cli

FOREIGN = FIXTURES / "foreign"
MODELS = {"rgb32_5_int8.tflite": ([1, 32, 32, 3], "int8", [1, 5]),
          "autoencoder_int8.tflite": ([1, 64], "int8", [1, 64]),
          "nchw_f32.onnx": ([-1, 1, 28, 28], "float32", [-1, 10])}


@pytest.mark.parametrize("name", MODELS)
def test_bench_and_profile_take_any_model(name, tmp_path):
    shape, dtype, out_shape = MODELS[name]
    model = Model(FOREIGN / name, classifier=False)
    assert list(model.input.shape) == shape and model.input.dtype == dtype and list(model.output.shape) == out_shape
    x = model.example_input(3)
    assert x.shape == (3, *shape[1:]) and x.dtype == np.dtype(dtype)
    assert np.array_equal(x, model.example_input(3))  # seeded: the same input every time
    assert model.run(x).shape == (3, *out_shape[1:])
    out = tmp_path / "bench.json"
    done = cli("bench", FOREIGN / name, "--batch", "1,4", "--runs", 5, "--warmup", 1, "--min-time", 0, "--profile",
               "--out", out, check=0)
    report = json.loads(out.read_text())
    assert [r["batch"] for r in report["results"]] == [1, 4] and all(r["latency_us"]["p50"] > 0 for r in report["results"])
    assert report["results"][0]["inputs"] == f"random {dtype} {shape[1:]}, seed 0"
    assert report["profiles"][name]["ops"] and "per operator" in done.stdout


def test_a_classifier_of_another_shape_is_still_refused_where_a_classifier_is_needed():
    with pytest.raises(InputError, match=r"model maps \(32, 32, 3\) -> \(5,\), expected a \(28, 28, 1\)"):
        Model(FOREIGN / "rgb32_5_int8.tflite")


def test_numpy_backend_is_exact_on_a_foreign_int8_model_or_names_the_op():
    path = FOREIGN / "rgb32_5_int8.tflite"
    numpy = Model(path, backend="numpy", classifier=False)
    reference = Model(path, kernels="reference", classifier=False)
    x = numpy.example_input(16)
    assert np.array_equal(numpy.run(x), reference.run(x))  # TFLite's reference integer arithmetic, bit for bit
    with pytest.raises(Unsupported, match="operator LOGISTIC is not supported by the numpy backend"):
        Model(FOREIGN / "autoencoder_int8.tflite", backend="numpy", classifier=False)


def test_bench_skips_what_the_numpy_backend_cannot_run_and_says_so(tmp_path):
    out = tmp_path / "bench.json"
    done = cli("bench", FOREIGN / "rgb32_5_int8.tflite", FOREIGN / "autoencoder_int8.tflite", "--backend", "numpy",
               "--runs", 3, "--warmup", 0, "--min-time", 0, "--out", out, check=0)
    assert "skipped autoencoder_int8.tflite" in done.stderr and "LOGISTIC" in done.stderr
    assert [r["file"] for r in json.loads(out.read_text())["results"]] == ["rgb32_5_int8.tflite"]
    alone = cli("bench", FOREIGN / "autoencoder_int8.tflite", "--backend", "numpy", "--out", tmp_path / "x.json")
    last = alone.stderr.strip().splitlines()[-1]  # after the progress line, one error line
    assert alone.returncode == 2 and last.startswith("error: nothing to benchmark") and "LOGISTIC" in last
    assert alone.stderr.count("error:") == 1 and not (tmp_path / "x.json").exists()


def test_bench_on_the_users_own_input_array(tmp_path):
    good, bad = tmp_path / "signals.npy", tmp_path / "bad.npy"
    np.save(good, np.random.default_rng(1).integers(-128, 128, (5, 64), dtype=np.int8))
    np.save(bad, np.zeros((5, 63), np.int8))
    model = FOREIGN / "autoencoder_int8.tflite"
    done = cli("bench", model, "--input", good, "--batch", "1,8", "--runs", 3, "--warmup", 0, "--min-time", 0, "--json",
               check=0)
    assert [(r["batch"], r["inputs"]) for r in json.loads(done.stdout)["results"]] == [(1, "signals.npy"), (8, "signals.npy")]
    refused = cli("bench", model, "--input", bad, "--out", tmp_path / "b.json")
    assert refused.returncode == 2 and "int8 (5, 63), expected int8 (N, 64)" in refused.stderr
    assert not (tmp_path / "b.json").exists()


def test_open_dimensions_take_input_shape(tmp_path):
    model = FOREIGN / "nchw_dynamic_f32.onnx"  # (N, 1, H, W) -> 10
    refused = cli("bench", model, "--out", tmp_path / "b.json")
    assert refused.returncode == 2 and "has dynamic dimensions" in refused.stderr and "--input-shape" in refused.stderr
    wrong = cli("bench", model, "--input-shape", "3,40,30", "--out", tmp_path / "b.json")
    assert wrong.returncode == 2 and "--input-shape 3,40,30 does not fit" in wrong.stderr
    done = cli("bench", model, "--input-shape", "1,40,30", "--batch", "1,2", "--runs", 3, "--warmup", 0, "--min-time", 0,
               "--json", check=0)
    results = json.loads(done.stdout)["results"]
    assert [r["inputs"] for r in results] == ["random float32 [1, 40, 30], seed 0"] * 2
