"""Accuracy-aware int8: the repairs keep the float function, and export's search picks a candidate
that meets the gates on models made to quantize badly (tools/bad_int8_models.py), on real data."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgefashion.device.runtime import Model
from edgefashion.device.tflite_file import read as read_tflite
from edgefashion.rundir import Run
from helpers import ROOT, cli

sys.path.insert(0, str(ROOT / "tools"))
import bad_int8_models  # noqa: E402


@pytest.fixture(scope="module")
def keras():
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    return keras


def _small_cnn(keras):
    keras.utils.set_random_seed(0)
    layers = keras.layers
    # named: Keras numbers unnamed layers across the whole test session
    model = keras.Sequential([keras.Input((12, 12, 1)), layers.Conv2D(6, 3, activation="relu", name="c1"),
                              layers.Conv2D(8, 3, activation="relu", name="c2"),
                              layers.Conv2D(8, 3, activation="relu", name="c3"), layers.MaxPooling2D(),
                              layers.Flatten(), layers.Dense(16, activation="relu", name="d1"),
                              layers.Dense(4, activation="softmax", name="d2")])
    for layer in model.layers:  # biases as a trained model has them, not zeros
        weights = layer.get_weights()
        if len(weights) == 2:
            layer.set_weights([weights[0], np.random.default_rng(1).normal(0, 0.1, weights[1].shape).astype(np.float32)])
    return model


def test_equalization_keeps_the_function_and_balances_the_ranges(keras):
    from edgefashion.host import equalize

    model = _small_cnn(keras)
    images = np.random.default_rng(0).random((64, 12, 12, 1), dtype=np.float32)
    before = model.predict(images, verbose=0)
    bad_int8_models.spread(model)
    assert np.abs(model.predict(images, verbose=0) - before).max() < 1e-5  # the same function, bad ranges
    rows = equalize.equalize(model)
    assert [r["layers"] for r in rows] == ["c1 -> c2", "c2 -> c3", "c3 -> d1", "d1 -> d2"]  # through pooling, flatten
    assert rows[0]["range_ratio_before"] > 50 and all(r["range_ratio_after"] < 10 for r in rows)
    assert np.abs(model.predict(images, verbose=0) - before).max() < 1e-5
    assert equalize.equalize_activations(model, keras, images)
    assert np.abs(model.predict(images, verbose=0) - before).max() < 1e-5
    biases = [layer.get_weights()[1].copy() for layer in equalize.chain(model) if layer.get_weights()]
    assert equalize.correct_bias(model, keras, images) == ["c1", "c2", "c3", "d1", "d2"]
    moved = [not np.array_equal(b, layer.get_weights()[1]) for b, layer in
             zip(biases, [la for la in equalize.chain(model) if la.get_weights()])]
    assert any(moved)  # corrected by the mean shift of int8 weights, which is not zero


def _quantization(run):
    return json.loads((run / "export" / "export.json").read_text())["quantization"]


def test_plain_ptq_is_all_that_runs_when_it_meets_the_gates(tiny_run):
    candidates = _quantization(tiny_run)["candidates"]
    assert [(c["format"], c["name"], c["chosen"]) for c in candidates] == [("tflite-int8", "ptq", True),
                                                                          ("onnx-int8", "ptq", True)]


def test_export_repairs_a_model_whose_channel_ranges_differ_100x(tiny_run, tmp_path):
    run = bad_int8_models.make(tiny_run, tmp_path / "spread", "spread")
    done = cli("export", run, "--formats", "tflite-int8", "--max-drop", 1, "--min-agreement", 0.97, check=0)
    tried = {c["name"]: c for c in _quantization(run)["candidates"]}
    assert not tried["ptq"]["meets_gates"] and tried["ptq"]["top1_agreement"] < 0.97  # plain int8 is broken
    chosen = next(c for c in tried.values() if c["chosen"])
    assert chosen["method"] in ("calibration", "cle") and chosen["meets_gates"] and chosen["full_int8"]
    assert "weight ranges over channels" in done.stderr and f"tflite-int8: {chosen['name']}" in done.stderr
    artifact = next(a for a in json.loads((run / "export" / "export.json").read_text())["artifacts"]
                    if a["format"] == "tflite-int8")
    assert artifact["bytes"] == chosen["bytes"]


def test_float_layers_keep_a_full_int8_model_for_the_firmware(tiny_run, tmp_path):
    run = bad_int8_models.make(tiny_run, tmp_path / "outlier", "outlier")
    cli("export", run, "--formats", "tflite-int8,tflite-f32", "--quantization", "float-layers",
        "--max-drop", 100, "--min-agreement", 0, check=0)
    quantization = _quantization(run)
    chosen = next(c for c in quantization["candidates"] if c["chosen"])
    assert chosen["method"] == "float-layers" and chosen["float_layers"] and not chosen["full_int8"]
    assert chosen["name"] == "float-head"  # the cheapest float-layers step, so the first to meet open gates
    assert chosen["base"] == "ptq" and Run(run).read_export().made_by("tflite-int8").startswith("float-head on ptq (")
    mixed = read_tflite((run / "export" / "model_int8.tflite").read_bytes(), "mixed")
    ops = [op.op for op in mixed.operators]
    assert ops[0] == "QUANTIZE" and ops[-1] == "SOFTMAX" and "DEQUANTIZE" in ops  # float in, int8 inside, float out
    head = Model(run / "export" / "model_int8.tflite")
    assert (head.input.dtype, head.output.dtype, head.format) == ("float32", "float32", "tflite-int8")
    firmware = Run(run).firmware_model()
    assert firmware.name == "model_int8_firmware.tflite" and quantization["firmware"]["full_int8"]
    model = Model(firmware)
    assert (model.input.dtype, model.output.dtype) == ("int8", "int8")
    assert {"DEQUANTIZE", "QUANTIZE"}.isdisjoint(op.op for op in read_tflite(firmware.read_bytes(), "firmware").operators)
    probs = Model(run / "export" / "model_int8.tflite").predict_proba(np.zeros((2, 28, 28), np.uint8))
    assert probs.shape == (2, 10)
    # float probabilities out of an int8 model: selftest holds them to the float tolerance on either
    # backend (the open gates let a broken model through, so its accuracy checks fail: exit 1)
    cli("bundle", run, "--golden", 20, "--out", tmp_path / "head.tar.gz")
    for backend in ("auto", "numpy"):
        lines = cli("selftest", tmp_path / "head.tar.gz", "--backend", backend, check=1).stdout.splitlines()
        golden = [line for line in lines if "golden model_int8.tflite" in line]
        assert golden and all(line.startswith("PASS") for line in golden), lines
        assert "float output" in golden[0] and "differ" in golden[0]


def test_quantization_aware_fine_tuning_moves_the_weights_not_the_model(keras):
    import tensorflow as tf

    from edgefashion.host import qat

    model = _small_cnn(keras)
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(0).random((300, 12, 12, 1), dtype=np.float32)
    targets = model.predict(images, verbose=0)
    tuned = qat.fine_tune(model, keras, tf, images, targets, seed=0, epochs=1)
    assert [type(a).__name__ for a in tuned.layers] == [type(b).__name__ for b in model.layers]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the original is left alone
    assert any(not np.array_equal(a, b) for a, b in zip(before, tuned.get_weights()))  # the copy was fine-tuned
    assert np.abs(tuned.predict(images, verbose=0) - targets).max() < 0.2  # distilled: near the float answers
    kernel = model.layers[1].get_weights()[0]  # rounded as the converter rounds: 127 steps of max|w| per channel
    steps = qat._int8_kernel(tf, tf.constant(kernel), depthwise=False).numpy() / (np.abs(kernel).max((0, 1, 2)) / 127)
    assert np.abs(steps - np.round(steps)).max() < 1e-3 and np.abs(steps).max() <= 127.001
    inputs = keras.Input((4,))
    branched = keras.Model(inputs, keras.layers.Add()([keras.layers.Dense(4)(inputs), inputs]))
    assert qat.fine_tune(branched, keras, tf, np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32), 0) is None


def test_learned_rounding_keeps_the_grid_the_converter_uses_and_lowers_each_layers_error(keras):
    import tensorflow as tf

    from edgefashion.host import adaround
    from edgefashion.host.export import _tflite

    model = _small_cnn(keras)
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(0).random((200, 12, 12, 1), dtype=np.float32)
    rounded, rows = adaround.adaround(model, keras, tf, images, seed=0, iterations=300)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the original is left alone
    assert [r["layer"] for r in rows] == ["c1", "c2", "c3", "d1", "d2"]
    assert any(r["rounded_other_way"] for r in rows)  # not just rounding to nearest
    assert all(r["error_learned"] < r["error_nearest"] for r in rows if r["rounded_other_way"]), rows
    kernels = {layer.name: layer.get_weights()[0] for layer in rounded.layers if layer.get_weights()}
    for name, kernel in kernels.items():  # on the grid, each channel's largest weight where it was
        steps = kernel / adaround.grid(kernel)
        assert np.abs(steps - np.round(steps)).max() < 1e-4 and np.abs(steps).max() <= 127.0001
        original = next(la for la in model.layers if la.name == name).get_weights()[0]
        assert np.allclose(np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0),
                           np.abs(original).reshape(-1, original.shape[-1]).max(0))
    # the converter rounds them to themselves: its int8 weights are the integers AdaRound chose
    graph = read_tflite(_tflite(tf, rounded, images[:50], quantize=True), "rounded")
    weighted = [op for op in graph.operators if op.op in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(weighted) == len(kernels)
    for op, (name, kernel) in zip(weighted, kernels.items()):  # graph order is the chain's order
        chosen = np.round(kernel / adaround.grid(kernel))
        chosen = np.moveaxis(chosen, -1, 0) if kernel.ndim == 4 else chosen.T  # TFLite: outputs first
        assert np.array_equal(graph.tensors[op.inputs[1]].data.reshape(chosen.shape), chosen), name


def test_learned_rounding_on_onnx_runtimes_7_bit_grid_keeps_its_integers(keras, tmp_path):
    import onnx
    import tensorflow as tf
    from onnx import numpy_helper

    from edgefashion.host import adaround
    from edgefashion.host.export import _onnx_f32, quantize_onnx

    images = np.random.default_rng(1).random((120, 12, 12, 1), dtype=np.float32)
    rounded, rows = adaround.adaround(_small_cnn(keras), keras, tf, images, seed=0, iterations=200, levels=64)
    assert any(r["rounded_other_way"] for r in rows)
    f32 = tmp_path / "rounded.onnx"
    f32.write_bytes(_onnx_f32(tf, rounded, images.shape[1:]))
    graph = onnx.load_from_string(quantize_onnx(f32, images[:50], scratch=tmp_path)).graph  # reduce_range
    stored = sorted((numpy_helper.to_array(i) for i in graph.initializer
                     if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2), key=lambda a: a.size)
    kernels = [la.get_weights()[0] for la in rounded.layers if la.get_weights()]
    chosen = [np.round(k / adaround.grid(k, 64)) for k in kernels]
    chosen = sorted((np.transpose(c, (3, 2, 0, 1)) if c.ndim == 4 else c for c in chosen), key=lambda a: a.size)
    assert len(stored) == len(chosen) and all(np.abs(c).max() <= 64 for c in chosen)
    for onnx_ints, ours in zip(stored, chosen):  # ONNX: conv weights OIHW, MatMul weights (inputs, outputs)
        assert np.array_equal(onnx_ints, ours)


def test_export_rounds_by_learning_on_each_formats_grid(tiny_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    run = bad_int8_models.make(tiny_run, tmp_path / "spread", "spread")
    done = cli("export", run, "--formats", "tflite-int8,onnx-int8", "--quantization", "adaround", "--max-drop", 100,
               "--min-agreement", 0, check=0)
    tried = [(c["format"], c["name"], c["chosen"], c["full_int8"]) for c in _quantization(run)["candidates"]]
    assert tried == [("tflite-int8", "ptq", False, True), ("tflite-int8", "adaround", True, True),
                     ("onnx-int8", "ptq", False, True), ("onnx-int8", "adaround", True, True)]
    assert done.stderr.count("from ptq; ") == 2 and "weights the other way, output error" in done.stderr
    # ONNX Runtime's 7-bit weights (reduce_range): every channel spans -64..64, the grid AdaRound rounded on
    graph = onnx.load(str(Run(run).export_dir / "model_int8.onnx")).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8
               and len(i.dims) >= 2]
    assert weights and all(np.abs(w).reshape(w.shape[0], -1).max(1).tolist() == [64] * w.shape[0]
                           for w in weights if w.ndim == 4)


def test_export_can_fine_tune_for_int8_and_keeps_the_float_models(tiny_run, tmp_path):
    run = bad_int8_models.make(tiny_run, tmp_path / "spread", "spread")
    done = cli("export", run, "--formats", "tflite-int8,tflite-f32", "--quantization", "qat", "--max-drop", 100,
               "--min-agreement", 0, check=0)
    tried = {c["name"]: c for c in _quantization(run)["candidates"]}
    assert list(tried) == ["ptq", "qat"] and tried["qat"]["full_int8"] and tried["qat"]["chosen"]
    assert "epochs on" in done.stderr and "tflite-int8: qat" in done.stderr
    # the float model is the one trained, not the fine-tuned one: the same bytes as plain export's
    cli("export", bad_int8_models.make(tiny_run, tmp_path / "plain", "spread"), "--formats", "tflite-int8,tflite-f32",
        "--quantization", "ptq", "--max-drop", 100, "--min-agreement", 0, check=0)
    assert ((run / "export" / "model_f32.tflite").read_bytes()
            == (tmp_path / "plain" / "export" / "model_f32.tflite").read_bytes())


def test_a_validation_set_smaller_than_the_ranking_subset_is_scored_whole(tiny_run):
    # --limit 500 leaves ~100 validation images, fewer than the float-layer ranking's SELECTION_IMAGES
    from edgefashion.device.verify import Gates
    from edgefashion.host.int8_search import SELECTION_IMAGES, Validation, score
    content = (tiny_run / "export" / "model_int8.tflite").read_bytes()
    images = np.random.default_rng(0).integers(0, 256, (SELECTION_IMAGES // 10, 28, 28), dtype=np.uint8)
    reference = Model(content).predict_proba(images)
    validation = Validation(images, reference.argmax(1), reference, np.arange(len(images)), {})
    candidate = score("tflite-int8", "float-layers", "", "", content, validation, 0.0, Gates(),
                      images=SELECTION_IMAGES, timed=False)
    assert candidate.top1_agreement == 1.0 and candidate.differences == 0


def test_float_layer_options_are_ranked_on_rows_that_do_not_judge(tiny_run, tmp_path, keras):
    from edgefashion import rundata
    from edgefashion.host.int8_search import SELECTION_IMAGES, VALIDATION_IMAGES, validation_set

    rows = rundata.training_rows(Run(tiny_run), None)
    model = keras.models.load_model(Run(tiny_run).model)
    calibration = np.arange(100)
    # a run with no training record: the pool is every training row but the calibration ones
    judged = validation_set(rows, Run(tmp_path), None, calibration, model, seed=0)
    ranking = judged.ranking
    assert (len(judged.indices), len(ranking.indices)) == (VALIDATION_IMAGES, SELECTION_IMAGES)
    assert not np.intersect1d(judged.indices, ranking.indices).size
    assert not np.intersect1d(judged.rows_used, calibration).size and len(judged.rows_used) == 2500
    assert np.allclose(ranking.reference, model.predict(ranking.images, verbose=0), atol=1e-5)
    assert judged.info["ranking"] == f"{SELECTION_IMAGES} other rows of the same pool"
    # the tiny run's validation split (591 rows) judges whole, and ranks on its own first rows
    assert _quantization(tiny_run)["validation"]["ranking"].startswith("the first 500 judged rows")
