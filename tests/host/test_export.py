import json

import numpy as np
import pytest

import shutil
import signal
import subprocess
import sys
import time

from edgefashion import data
from edgefashion.device.runtime import Model
from edgefashion.errors import InputError
from helpers import LOOSE_GATES, cli


def _manifest(run):
    return json.loads((run / "export" / "export.json").read_text())


def test_every_artifact_written_and_recorded(tiny_run):
    manifest = _manifest(tiny_run)
    formats = {a["format"]: a for a in manifest["artifacts"]}
    assert set(formats) == {"tflite-int8", "tflite-f32", "onnx-f32", "onnx-int8", "c-array"}
    for entry in manifest["artifacts"]:
        path = tiny_run / "export" / entry["file"]
        assert path.stat().st_size == entry["bytes"]
    assert manifest["calibration"]["count"] == 100 and len(manifest["calibration"]["indices_sha256"]) == 64
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert formats["tflite-int8"]["bytes"] <= 0.26 * formats["tflite-f32"]["bytes"]
    assert not list((tiny_run / "export").glob(".*"))  # no temporary files left behind
    # export owns its calibration: the indices, checked against export.json, and the per-layer table
    from edgefashion.rundir import Run
    from edgefashion.schemas import LayerErrors

    assert len(Run(tiny_run).read_calibration()) == 100
    layers = LayerErrors.read(tiny_run / "export" / "layer_errors.json")
    assert layers.model == "model_int8.tflite" and layers.rows and layers.rows[0]["rmse_per_step"] > 0


def test_int8_quantization_parameters_recorded_and_correct(tiny_run):
    entry = next(a for a in _manifest(tiny_run)["artifacts"] if a["format"] == "tflite-int8")
    model = Model(tiny_run / "export" / entry["file"])
    assert entry["input"]["dtype"] == "int8" and entry["output"]["dtype"] == "int8"
    assert entry["input"]["scale"] == pytest.approx(model.input.scale)
    assert entry["input"]["zero_point"] == model.input.zero_point
    # inputs are [0, 1] images: 256 int8 levels should span that range
    assert entry["input"]["scale"] == pytest.approx(1 / 255, rel=0.01) and entry["input"]["zero_point"] == -128
    # outputs are probabilities in [0, 1]
    assert entry["output"]["scale"] == pytest.approx(1 / 256, rel=0.01) and entry["output"]["zero_point"] == -128


def test_c_array_equals_model_bytes(tiny_run):
    from edgefashion.mcu import c_array_bytes

    source = (tiny_run / "export" / "model_int8_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model_int8[]" in source
    model = (tiny_run / "export" / "model_int8.tflite").read_bytes()
    assert c_array_bytes(source) == model
    assert f"const unsigned int g_model_int8_len = {len(model)};" in source
    assert '"Ankle boot"' in source


def test_float_models_match_keras(tiny_run, test_set):
    from edgefashion.host.model import load_model

    images = test_set.images[:200]
    keras_probs = load_model(tiny_run / "model.keras").predict(data.prepare(images), verbose=0)
    for name in ("model_f32.tflite", "model_f32.onnx"):
        probs = Model(tiny_run / "export" / name).predict_proba(images)
        assert np.abs(probs - keras_probs).max() <= 1e-4, name
    for name in ("model_int8.tflite", "model_int8.onnx"):
        agreement = (Model(tiny_run / "export" / name).predict(images).class_ids == keras_probs.argmax(1)).mean()
        assert agreement >= 0.9, name


def test_onnx_has_named_dynamic_batch_input(tiny_run):
    import onnx

    model = onnx.load(tiny_run / "export" / "model_f32.onnx")
    assert model.opset_import[0].version >= 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert model.graph.input[0].name == "input" and dims[0].dim_param == "N"
    assert [d.dim_value for d in dims[1:]] == [28, 28, 1]
    assert Model(tiny_run / "export" / "model_int8.onnx").predict(np.zeros((5, 28, 28), np.uint8)).class_ids.shape == (5,)


def test_onnx_bytes_do_not_depend_on_what_the_process_traced_before(tiny_run):
    import keras
    import tensorflow as tf

    from edgefashion.host.export import _onnx_f32

    model = keras.models.load_model(tiny_run / "model.keras")
    first = _onnx_f32(tf, model, (28, 28, 1))
    model.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0)  # more traces: TensorFlow's counters move on
    assert _onnx_f32(tf, model, (28, 28, 1)) == first


def test_bad_runs_refused(tmp_path, tiny_run):
    done = cli("export", tmp_path / "nowhere")
    assert done.returncode == 2 and "run directory not found" in done.stderr
    run = tmp_path / "corrupt"
    run.mkdir()
    (run / "model.keras").write_bytes((tiny_run / "model.keras").read_bytes()[:5000])
    done = cli("export", run)
    assert done.returncode == 2 and "not a readable Keras model" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (run / "export").exists()


def test_wrong_shape_model_refused(tmp_path):
    from tensorflow import keras

    run = tmp_path / "wrong"
    run.mkdir()
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    model.save(run / "model.keras")
    done = cli("export", run)  # no config.json: the run is Fashion-MNIST's, 28x28x1 of 10 classes
    assert done.returncode == 2 and "takes 32x32x3 images of 5 classes" in done.stderr \
        and "28x28x1 images of 10 classes" in done.stderr


def _hashes(folder):
    from edgefashion.files import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_export_is_all_or_nothing_and_one_at_a_time(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _hashes(run / "export")
    # a second export, killed while it builds its set: the old set stays, whole
    proc = subprocess.Popen([sys.executable, "-m", "edgefashion", "export", str(run), "--calibration", "200",
                             *map(str, LOOSE_GATES)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not any(
            p.is_file() for p in run.glob(".export.tmp-pid*/model_*")):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    third = cli("export", run)  # while the second one holds the lock
    assert third.returncode == 2 and "another export is running on this run directory" in third.stderr
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _hashes(run / "export") == before
    # the next export cleans up after the killed one and replaces the set whole
    done = cli("export", run, "--formats", "tflite-int8", "--calibration", 100, *LOOSE_GATES, check=0)
    assert "removed 1 leftover(s) of an interrupted run: .export.tmp-pid" in done.stderr
    assert sorted(p.name for p in (run / "export").iterdir()) == [
        "calibration.npz", "export.json", "layer_errors.json", "model_int8.tflite", "model_int8_data.cc",
        "model_int8_data.h", "ood.npz"]
    assert not list(run.glob(".export.tmp-pid*"))


def test_a_changed_model_file_is_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "export" / "model_f32.tflite").write_bytes((run / "export" / "model_int8.tflite").read_bytes())
    done = cli("bundle", run, "--out", tmp_path / "b.tar.gz")
    assert done.returncode == 2 and "model_f32.tflite: does not match its sha256 in export.json" in done.stderr


def test_onnx_int8_settings_recorded(tiny_run):
    settings = _manifest(tiny_run)["onnx_int8"]
    assert settings["activations"] == "uint8" and settings["weights"] == "int8" and settings["reduce_range"]
    assert settings["quant_format"] == "QDQ" and "saturation" in settings["why"]
    import onnx
    from onnx import numpy_helper

    model = onnx.load(tiny_run / "export" / "model_int8.onnx")
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64  # 7-bit weights


def test_model_that_is_not_the_classifier(tmp_path):
    import tensorflow as tf
    from tensorflow import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with pytest.raises(InputError, match=r"a float32 \(64,\) -> \(10,\) model, not an image classifier"):
        Model(content, name="other.tflite")


def test_per_layer_errors_cover_both_int8_formats(tiny_run, tmp_path):
    """TFLite's QuantizationDebugger and ONNX Runtime's qdq_loss_debug, at export; verify.json carries both."""
    onnx_layers = json.loads((tiny_run / "export" / "layer_errors_onnx.json").read_text())
    assert onnx_layers["model"] == "model_int8.onnx" and onnx_layers["rows"]
    assert all("sqnr_vs_float_model_db" in r for r in onnx_layers["rows"])
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cli("verify", run, "--reference", "tflite-f32", *LOOSE_GATES)
    report = json.loads((run / "verify.json").read_text())
    assert set(report["layer_errors"]) == {"tflite-int8", "onnx-int8"}
    assert "qdq_loss_debug" in (run / "verify.md").read_text()
