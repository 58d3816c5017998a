"""Models edgefashion did not make (tests/fixtures/foreign, from tools/make_foreign_models.py): other
input shapes, a model that is not a classifier, an NCHW ONNX model. bench and bench --profile take
them on seeded random inputs of their declared shape; the numpy backend is exact or names the op."""

import json
import sys

import numpy as np
import pytest

from edgefashion.device.numpy_interpreter import NumpyInterpreter
from edgefashion.device.runtime import Model
from edgefashion.errors import InputError, Unsupported
from helpers import FIXTURES, ROOT, cli

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
    # a 28x28 grey classifier (NCHW too) is timed on the Fashion-MNIST test images, anything else on random inputs
    fashion = name == "nchw_f32.onnx"
    assert report["results"][0]["inputs"] == ("Fashion-MNIST test images" if fashion else
                                              f"random {dtype} {shape[1:]}, seed 0")
    assert report["profiles"][name]["ops"] and "per operator" in done.stdout


def test_any_image_classifier_reads_its_shape_layout_and_classes(tmp_path):
    """NHWC RGB int8, NCHW grey float: grey and RGB images reach each in its own layout and channels;
    a model that is not a classifier is refused in one line naming what takes it."""
    rgb = Model(FOREIGN / "rgb32_5_int8.tflite")
    assert (rgb.layout, rgb.image_shape, rgb.labels) == ("NHWC", (32, 32, 3), [f"class {i}" for i in range(5)])
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    grey = pixels[..., :1]
    assert rgb.prepare(grey).shape == (4, 32, 32, 3) and np.array_equal(rgb.prepare(grey)[..., 0], rgb.prepare(grey)[..., 2])
    assert rgb.predict(pixels).probabilities.shape == (4, 5)
    nchw = Model(FOREIGN / "nchw_f32.onnx", labels=list("abcdefghij"))
    assert (nchw.layout, nchw.image_shape) == ("NCHW", (28, 28, 1))
    assert nchw.prepare(pixels[:, :28, :28]).shape == (4, 1, 28, 28)  # RGB -> grey, channels first
    assert nchw.predict(pixels[0, :28, :28, 0]).labels[0] in "abcdefghij"
    with pytest.raises(InputError, match="3 class names for a model of 10 classes"):
        Model(FOREIGN / "nchw_f32.onnx", labels=["a", "b", "c"])
    with pytest.raises(InputError, match=r"\(64,\) -> \(64,\) model, not an image classifier.*bench, bench --profile and firmware take any model"):
        Model(FOREIGN / "autoencoder_int8.tflite")
    done = cli("predict", FOREIGN / "autoencoder_int8.tflite", tmp_path / "x.npy", check=2)
    assert "not an image classifier" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["rgb32_5_int8.tflite", "autoencoder_int8.tflite"])
def test_numpy_backend_is_exact_on_foreign_int8_models(name):
    path = FOREIGN / name
    numpy = Model(path, backend="numpy", classifier=False)
    reference = Model(path, kernels="reference", classifier=False)
    x = numpy.example_input(500)
    ours, theirs = numpy.run(x), reference.run(x)
    assert np.array_equal(ours, theirs)  # TFLite's reference integer arithmetic, bit for bit
    if name.startswith("autoencoder"):
        assert len(np.unique(ours)) > 50  # many of its LOGISTIC table's entries, not a few


def test_numpy_backend_names_the_op_it_cannot_run():
    with pytest.raises(Unsupported, match="operator TILE is not supported by the numpy backend"):
        Model(FIXTURES / "tile-479mb.tflite", backend="numpy", classifier=False)
    # TFLM computes int8 LOGISTIC in fixed point, not by LiteRT's table: refused rather than approximated
    with pytest.raises(Unsupported, match="LOGISTIC in TensorFlow Lite Micro's fixed-point arithmetic"):
        NumpyInterpreter((FOREIGN / "autoencoder_int8.tflite").read_bytes(), "autoencoder", flavor="tflm")


def test_bench_skips_what_the_numpy_backend_cannot_run_and_says_so(tmp_path):
    out, tile = tmp_path / "bench.json", FIXTURES / "tile-479mb.tflite"
    done = cli("bench", FOREIGN / "rgb32_5_int8.tflite", tile, "--backend", "numpy",
               "--runs", 3, "--warmup", 0, "--min-time", 0, "--out", out, check=0)
    assert "skipped tile-479mb.tflite" in done.stderr and "TILE" in done.stderr
    assert [r["file"] for r in json.loads(out.read_text())["results"]] == ["rgb32_5_int8.tflite"]
    alone = cli("bench", tile, "--backend", "numpy", "--out", tmp_path / "x.json")
    last = alone.stderr.strip().splitlines()[-1]  # after the progress line, one error line
    assert alone.returncode == 2 and last.startswith("error: nothing to benchmark") and "TILE" in last
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


def test_a_model_of_several_inputs_and_outputs(tmp_path):
    """Every input gets seeded random values of its own shape, every output is computed; profile and the
    classifier commands say what they take instead."""
    model = Model(FOREIGN / "two_io_int8.tflite", classifier=False)
    assert sorted(list(t.shape) for t in model.inputs) == [[1, 8], [1, 16]] and len(model.outputs) == 2
    x = model.example_input(3)
    assert isinstance(x, tuple) and sorted(a.shape for a in x) == [(3, 8), (3, 16)]
    assert model.run(x).shape[0] == 3
    out = tmp_path / "bench.json"
    done = cli("bench", FOREIGN / "two_io_int8.tflite", "--batch", "1,4", "--runs", 5, "--warmup", 1, "--min-time", 0,
               "--profile", "--out", out, check=0)
    report = json.loads(out.read_text())
    assert [r["batch"] for r in report["results"]] == [1, 4] and "signal" in report["results"][0]["inputs"]
    assert "no profile of two_io_int8.tflite: 2 inputs" in done.stderr and report["profiles"] is None
    with pytest.raises(InputError, match="2 inputs and 2 outputs, not an image classifier"):
        Model(FOREIGN / "two_io_int8.tflite")
    np.save(tmp_path / "x.npy", np.zeros((2, 16), np.int8))
    refused = cli("bench", FOREIGN / "two_io_int8.tflite", "--input", tmp_path / "x.npy", "--out", tmp_path / "b2.json",
                  check=2)
    assert "2 inputs; --input FILE.npy is for a model of one input" in refused.stderr


DIGITS_BUNDLE = FOREIGN / "digits-bundle.tar.gz"  # the seed CNN on scikit-learn's 8x8 digits (tools/make_foreign_models.py)


def test_a_bundle_of_other_data_on_the_device(tmp_path, fashion_dir):
    """8x8 grey images, 10 named classes: selftest, verify on the user's data and predict, no TensorFlow."""
    sys.path.insert(0, str(ROOT / "tools"))
    import digits_to_csv

    done = cli("selftest", DIGITS_BUNDLE, check=0)
    assert "golden model_int8.tflite (reference kernels): max 0 quantization steps" in done.stdout
    csv = digits_to_csv.write(tmp_path / "digits")
    out = tmp_path / "verify.json"
    cli("verify", DIGITS_BUNDLE, "--data", csv, "--out", out, check=0)
    report = json.loads(out.read_text())
    assert report["reference"]["samples"] == 1797 and report["reference"]["accuracy"] > 0.85
    assert list(report["models"][0]["per_class_accuracy"]) == list(digits_to_csv.NAMES)
    predicted = json.loads(cli("predict", DIGITS_BUNDLE, csv, "--json", check=0).stdout)
    assert predicted["accuracy"] > 0.85 and predicted["predictions"][0]["truth"] == "zero"
    fashion = cli("verify", DIGITS_BUNDLE, "--data", fashion_dir, check=2)  # another task's test set
    assert "images are 28x28x1, the bundle's models' are 8x8x1; give a test set of the same images" in fashion.stderr


def test_class_names_packed_in_the_tflite(tmp_path):
    """TFLite metadata packs associated files as a zip after the flatbuffer: a labels file of K lines there
    names the classes; one of another length is ignored."""
    import io
    import zipfile

    def packed(names):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("labels.txt", "\n".join(names) + "\n")
        return (FOREIGN / "rgb32_5_int8.tflite").read_bytes() + buffer.getvalue()

    names = ["cat", "dog", "emu", "fox", "gnu"]
    model = Model(packed(names), name="labelled.tflite")
    assert model.labels == names
    assert model.predict(np.zeros((32, 32, 3), np.uint8)).labels[0] in names
    assert Model(packed(names[:3]), name="short.tflite").labels == [f"class {i}" for i in range(5)]
    path = tmp_path / "labelled.tflite"
    path.write_bytes(packed(names))
    np.save(tmp_path / "x.npy", np.zeros((2, 32, 32, 3), np.uint8))
    shown = json.loads(cli("predict", path, tmp_path / "x.npy", "--json", check=0).stdout)
    assert shown["model"]["labels"] == names and shown["predictions"][0]["label"] in names
    (tmp_path / "mine.txt").write_text("\n".join(n.upper() for n in names))
    mine = json.loads(cli("predict", path, tmp_path / "x.npy", "--labels", tmp_path / "mine.txt", "--json",
                          check=0).stdout)
    assert mine["model"]["labels"] == [n.upper() for n in names]


def test_a_model_giving_more_rows_than_images_is_refused(tmp_path):
    """Declared (N, 10), gives 2N rows: never printed against the wrong files."""
    np.save(tmp_path / "ten.npy", np.zeros((10, 28, 28), np.uint8))
    done = cli("predict", FOREIGN / "malformed_rows_f32.onnx", tmp_path / "ten.npy", check=2)
    assert "gave output [20, 10] for 10 images, expected [10, 10] (a malformed model)" in done.stderr
