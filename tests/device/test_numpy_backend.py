"""The numpy backend against LiteRT's reference kernels (BUILTIN_REF): the same integers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgefashion.device import numpy_kernels as k
from edgefashion.device import runtime
from edgefashion.device.runtime import Model
from edgefashion.errors import InputError, Unsupported
from helpers import FIXTURES, cli

OPS = FIXTURES / "ops"  # tools/make_ops_models.py: every supported operator, SAME and VALID, strides
INT8_MODELS = [FIXTURES / "run" / "export" / "model_int8.tflite", OPS / "model_ops_int8.tflite",
               OPS / "model_ops_int8_float_io.tflite"]
FLOAT_MODELS = [FIXTURES / "run" / "export" / "model_f32.tflite", OPS / "model_ops_f32.tflite"]


@pytest.mark.parametrize("path", INT8_MODELS, ids=lambda p: p.name)
def test_int8_outputs_equal_litert_reference_kernels(path, few_images):
    numpy_model, reference = Model(path, backend="numpy"), Model(path, kernels="reference")
    assert numpy_model.backend == "numpy"
    ours = numpy_model.run(numpy_model.prepare(few_images.images))
    theirs = reference.run(reference.prepare(few_images.images))
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs), f"{int((ours != theirs).sum())} of {ours.size} values differ"


@pytest.mark.parametrize("path", FLOAT_MODELS, ids=lambda p: p.name)
def test_float_models_agree_closely(path, few_images):
    ours = Model(path, backend="numpy").predict_proba(few_images.images)
    theirs = Model(path).predict_proba(few_images.images)
    assert np.abs(ours - theirs).max() < 1e-5 and (ours.argmax(1) == theirs.argmax(1)).all()


def test_fast_requantization_equals_the_integer_formula():
    rng = np.random.default_rng(0)
    for once in (False, True):
        multipliers = rng.integers(2 ** 30, 2 ** 31 - 1, 16)
        shifts = rng.integers(-14, -6, 16) if not once else rng.integers(-14, -6, 16)
        acc = rng.integers(-2 ** 20, 2 ** 20, (4000, 16)).astype(np.float32)
        bias = rng.integers(-5000, 5000, 16)
        requantize = k.Requantize(multipliers, shifts, -3, (-128, 127), once=once, bias=bias)
        exact = (k.multiply_once if once else k.multiply)(acc.astype(np.int64) + bias, multipliers, shifts) - 3
        assert requantize.fast
        assert np.array_equal(requantize(acc), np.clip(exact, -128, 127).astype(np.int8))
        bounded = k.Requantize(multipliers, shifts, -3, (-128, 127), once=once, bias=bias, max_acc=2 ** 20)
        assert bounded.always_fast and np.array_equal(bounded(acc), requantize(acc))
    assert not k.Requantize(multipliers, shifts, 0, (-128, 127), bias=bias, max_acc=2 ** 24 - 10).always_fast


def test_the_few_values_near_a_tie_take_the_integer_formulas():
    """Values within the float32 margin of a rounding tie are recomputed by a path of their own (one
    lookup of their channels' constants): the same integers as the general formulas, for both
    roundings and for left (positive) shifts too."""
    rng = np.random.default_rng(3)
    for once in (False, True):
        for low, high in ((-14, -6), (-3, 3)):
            requantize = k.Requantize(rng.integers(2 ** 30, 2 ** 31 - 1, 12), rng.integers(low, high, 12), 0,
                                      (-128, 127), once=once, bias=rng.integers(-5000, 5000, 12))
            acc, channels = rng.integers(-2 ** 23, 2 ** 23, 3000), rng.integers(0, 12, 3000)
            assert np.array_equal(requantize._exact_few(acc, channels), requantize.exact(acc, channels))


def test_softmax_of_a_few_rows_equals_the_vectorized_reciprocal():
    """One or a few rows take a Python-int path: the same integers as the numpy one."""
    rng = np.random.default_rng(0)
    sums = np.concatenate([np.arange(1, 3000), rng.integers(1, 2 ** 31 - 1, 20000), [2 ** 30, 2 ** 31 - 1]])
    headroom = 32 - np.frexp(sums.astype(np.float64))[1]
    scales = k._one_over_one_plus_x(((sums << headroom) & 0xFFFFFFFF) - (1 << 31))
    assert [k.reciprocal(int(s)) for s in sums] == list(zip(scales.tolist(), headroom.tolist()))
    softmax = k.SoftmaxInt8(1.0, 0.0625)
    rows = rng.integers(-128, 128, (k.SCALAR_ROWS * k.SCALAR_ROW // 10 + 1, 10)).astype(np.int8)
    rows[:3, :5] = -128  # values at diff -255, outside the table's radius
    assert rows.size > k.SCALAR_ROWS * k.SCALAR_ROW  # all at once: the arrays; one row: Python ints
    assert np.array_equal(np.concatenate([softmax(rows[i:i + 1]) for i in range(len(rows))]), softmax(rows))


def test_auto_picks_numpy_without_an_interpreter(monkeypatch, few_images):
    def no_interpreter(name):
        raise ImportError(f"No module named {name!r}")
    monkeypatch.setattr(runtime, "_import_interpreter", no_interpreter)
    model = Model(INT8_MODELS[0])
    assert model.backend == "numpy" and model.format == "tflite-int8"
    assert model.predict(few_images.images[:5]).labels


def test_unsupported_models_and_ops_are_named():
    with pytest.raises(Unsupported, match=r"runs .tflite models \(int8 and float\), not ONNX"):
        Model(FIXTURES / "run" / "export" / "model_int8.onnx", backend="numpy")
    with pytest.raises(InputError, match="operator TILE is not supported by the numpy backend"):
        Model(FIXTURES / "tile-479mb.tflite", backend="numpy")


def test_malformed_flatbuffers_are_one_line_errors():
    blob = (OPS / "model_ops_int8.tflite").read_bytes()
    for bad in (blob[:8], blob[:len(blob) // 2], b"\x10\x00\x00\x00TFL3" + b"\xff" * 64):
        with pytest.raises(InputError) as info:
            Model(bad, backend="numpy", name="bad.tflite")
        assert str(info.value).startswith("bad.tflite: ") and "\n" not in str(info.value)
    rng = np.random.default_rng(1)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(300):  # random byte changes: refused or run, never another exception
        mutant = bytearray(blob)
        for pos in rng.integers(0, len(mutant), int(rng.integers(1, 10))):
            mutant[pos] = int(rng.integers(0, 256))
        try:
            Model(bytes(mutant), backend="numpy", name=f"mutant{i}").predict(np.zeros((2, 28, 28), np.uint8))
            outcomes["loaded"] += 1
        except InputError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and outcomes["loaded"] + outcomes["refused"] == 300


def test_cli_selftest_and_predict_on_the_numpy_backend(fixture_bundle, few_images, tmp_path):
    lines = cli("selftest", fixture_bundle, "--backend", "numpy", check=0).stdout.splitlines()
    assert any(line.startswith("PASS  golden model_int8.tflite (numpy backend, reference arithmetic): max 0")
               for line in lines)
    assert sum(line.startswith("SKIP  load model_") for line in lines) == 2  # the ONNX models
    assert any(line.startswith("PASS  int8 vs float tflite") for line in lines)
    assert lines[-1].endswith(" passed, 0 failed, 2 skipped")
    np.save(tmp_path / "x.npy", few_images.images[:8])
    result = json.loads(cli("predict", fixture_bundle, tmp_path / "x.npy", "--backend", "numpy", "--json",
                            check=0).stdout)
    assert result["model"]["backend"] == "numpy" and len(result["predictions"]) == 8


def test_numpy_backend_refuses_what_would_be_a_wrong_answer(tmp_path):
    """A negative softmax beta (LiteRT's reference kernels abort on it) and a zero or huge activation scale
    are refused at load, naming the model and the operator, never run into wrong probabilities."""
    from ai_edge_litert.tools import flatbuffer_utils

    seed = FIXTURES / "run" / "export" / "model_int8.tflite"

    def mutant(change) -> Path:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(seed.read_bytes()))
        change(model)
        path = tmp_path / f"mutant{len(list(tmp_path.iterdir()))}.tflite"
        path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
        return path

    def beta(model):
        for op in model.subgraphs[0].operators:
            if op.builtinOptions is not None and hasattr(op.builtinOptions, "beta"):
                op.builtinOptions.beta = -1.0

    def scale(value):
        def change(model):
            tensor = model.subgraphs[0].tensors[model.subgraphs[0].operators[0].outputs[0]]
            tensor.quantization.scale = [value]
        return change

    with pytest.raises(InputError, match=r"mutant0.tflite: SOFTMAX: softmax beta -1.0, expected a positive number"):
        Model(mutant(beta), backend="numpy")
    for value in (0.0, 1e30):
        with pytest.raises(InputError, match="quantization scale .* expected positive and finite"):
            Model(mutant(scale(value)), backend="numpy")


def test_numpy_backend_refuses_every_model_litert_reference_kernels_refuse(tmp_path):
    """Side by side on 40 flipped-byte mutants of a real model: whatever LiteRT's reference kernels
    refuse (or die on), the numpy backend refuses too; whatever both run, they answer bit-identically.
    (The numpy backend may refuse more: asymmetric int8 weights, operators it lacks, each named.)"""
    from edgefashion.device.isolate import Crashed, in_worker
    from helpers import model_verdict

    seed = (FIXTURES / "run" / "export" / "model_int8.tflite").read_bytes()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        blob = bytearray(seed)
        for pos in rng.integers(0, len(blob), 8):
            blob[pos] = int(rng.integers(0, 256))
        paths.append(tmp_path / f"flip{i}.tflite")
        paths[-1].write_bytes(bytes(blob))
    reference = in_worker(model_verdict, [(str(p), None, "reference") for p in paths])
    numpy_backend = in_worker(model_verdict, [(str(p), "numpy", "reference") for p in paths])
    both_ran = 0
    for path, ref, ours in zip(paths, reference, numpy_backend):
        assert not isinstance(ours, Crashed), f"{path.name}: the numpy backend crashed ({ours.how})"
        if isinstance(ref, Crashed) or ref[0] == "refused":
            assert ours[0] == "refused", f"{path.name}: LiteRT refuses it ({ref}), the numpy backend ran it"
            assert ours[1].startswith(str(path)) and "\n" not in ours[1]
        elif ours[0] == "ran":
            assert ours[1] == ref[1], f"{path.name}: both ran it, with other outputs"
            both_ran += 1
    assert both_ran >= 3  # some flips land in weights both read the same way


def test_numpy_backend_keeps_the_litert_memory_budget(monkeypatch):
    from edgefashion.device import runtime

    path = FIXTURES / "run" / "export" / "model_int8.tflite"
    monkeypatch.setattr(runtime, "MAX_TENSOR_BYTES", 4096)  # smaller than the fixture's tensors
    for backend in (None, "numpy"):
        with pytest.raises(InputError, match=r"its tensors need \d+ MB for one image, more than the \d+ MB allowed"):
            Model(path, backend=backend)
    monkeypatch.setattr(runtime, "MAX_TENSOR_BYTES", 256 * 2**20)
    litert = Model(path)._runner.max_batch
    assert Model(path, backend="numpy")._runner.max_batch == min(runtime.MAX_BATCH, litert) and litert > 1000


def test_a_depthwise_kernel_too_large_for_float32_sums_is_still_exact():
    """64x64 taps of 255 x 127: sums past 2**24, where float32 drops units; they must stay exact."""
    from edgefashion.device import numpy_interpreter as ni
    from edgefashion.device.tflite_file import Tensor

    rng = np.random.default_rng(0)
    x = rng.integers(0, 128, (1, 64, 64, 2), dtype=np.int8)
    w = rng.integers(1, 128, (1, 64, 64, 2), dtype=np.int8)
    acc = ((x[0].astype(np.int64) + 128) * w[0]).sum(axis=(0, 1))  # input zero point -128
    assert np.abs(acc).max() > 2 ** 24
    tensors = [Tensor("x", (1, 64, 64, 2), np.int8, None, np.array([1.0]), np.array([-128])),
               Tensor("w", (1, 64, 64, 2), np.int8, w, np.array([0.1, 0.1]), np.array([0, 0]), 3),
               Tensor("b", (2,), np.int32, (500 - acc).astype(np.int32), np.array([0.1, 0.1]), np.array([0, 0]))]
    out = Tensor("y", (1, 1, 1, 2), np.int8, None, np.array([1.0]), np.array([0]))
    options = {"padding": 1, "stride_h": 1, "stride_w": 1, "dilation_h_factor": 1, "dilation_w_factor": 1,
               "depth_multiplier": 1, "fused_activation_function": 0}
    run = ni.depthwise_conv_2d(tensors, out, options)
    assert run(x).ravel().tolist() == [50, 50]  # (acc + bias) * 0.1 = 500 * 0.1, exactly


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_non_overlapping_pools_equal_the_sliding_windows(kind):
    """Pools that need no padding are a few strided views of the input (no window view); the same
    integers and floats as the sliding windows, for even and odd sizes, SAME (padding then: the
    windows) and VALID, windows that touch and that overlap."""
    from edgefashion.device import numpy_interpreter as ni
    from edgefashion.device.tflite_file import Tensor

    rng = np.random.default_rng(1)
    for h, w, f, s, padding, direct in [(8, 8, 2, 2, 0, True), (8, 8, 2, 2, 1, True), (7, 9, 2, 2, 1, True),
                                        (7, 9, 2, 2, 0, False), (9, 6, 3, 3, 1, True), (12, 12, 3, 3, 0, True),
                                        (9, 9, 3, 2, 1, True), (9, 9, 3, 2, 0, False), (8, 8, 3, 1, 1, True)]:
        x = rng.integers(-128, 128, (3, h, w, 5), dtype=np.int8)
        t = Tensor("x", x.shape, np.int8, None, np.array([0.05]), np.array([-3]))
        options = {"filter_height": f, "filter_width": f, "stride_h": s, "stride_w": s, "padding": padding,
                   "fused_activation_function": 0}
        size = (f, f, s, s, 1, 1, padding)
        assert (ni._taps(x, size) is not None) == direct, (h, w, f, s, padding)
        if kind == "max":
            got, f32 = ni.max_pool_2d([t], t, options)(x), ni.max_pool_2d_f32([t], t, options)(x.astype(np.float32))
            want = k.windows(x.astype(np.int32), *size, fill=np.iinfo(np.int32).min).max(axis=(3, 4))
            want_f32 = k.windows(x.astype(np.float32), *size, fill=-np.inf).max(axis=(3, 4))
        else:
            got, f32 = ni.average_pool_2d([t], t, options)(x), ni.average_pool_2d_f32([t], t, options)(x.astype(np.float32))
            total = k.windows(x.astype(np.int64), *size).sum(axis=(3, 4))
            count = k.windows(np.ones((1, h, w, 1), np.int64), *size).sum(axis=(3, 4))
            want = ni._rounded_mean(total, count)
            want_f32 = k.windows(x.astype(np.float32), *size).sum(axis=(3, 4)) / count
        assert got.dtype == np.int8 and np.array_equal(got, want.astype(np.int8)), (h, w, f, s, padding)
        assert np.allclose(f32, want_f32, rtol=0, atol=1e-4), (h, w, f, s, padding)


def test_strided_windows_equal_padded_sliding_windows():
    """windows() builds its view from strides in one call; the same values, in the same places, as
    numpy's sliding_window_view over an np.pad-ed input, for SAME and VALID, strides, dilations,
    odd sizes and a batch of 2."""
    from numpy.lib.stride_tricks import sliding_window_view

    rng = np.random.default_rng(2)
    for h, w, kh, kw, sh, sw, dh, dw, padding in [(7, 9, 3, 3, 1, 1, 1, 1, 0), (7, 9, 3, 3, 1, 1, 1, 1, 1),
                                                  (8, 8, 3, 2, 2, 2, 1, 1, 0), (9, 6, 5, 3, 2, 1, 1, 1, 1),
                                                  (10, 10, 3, 3, 1, 2, 2, 2, 0), (11, 8, 2, 3, 3, 2, 2, 1, 1),
                                                  (4, 4, 1, 1, 2, 2, 1, 1, 0), (5, 5, 5, 5, 1, 1, 1, 1, 1)]:
        x = rng.integers(-128, 128, (2, h, w, 3)).astype(np.int32)
        oh, top = k.output_size(h, kh, sh, dh, padding)
        ow, left = k.output_size(w, kw, sw, dw, padding)
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        bottom, right = max((oh - 1) * sh + eh - h - top, 0), max((ow - 1) * sw + ew - w - left, 0)
        padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-7)
        view = sliding_window_view(padded, (eh, ew), axis=(1, 2))[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw,
                                                                  :, ::dh, ::dw]
        got = k.windows(x, kh, kw, sh, sw, dh, dw, padding, fill=-7)
        assert np.array_equal(got, view.transpose(0, 1, 2, 4, 5, 3)), (h, w, kh, kw, sh, sw, dh, dw, padding)


def test_depthwise_by_taps_equals_the_windows():
    """Depthwise convolutions sum tap by tap (whole rows at stride 1); the same sums as the einsum
    over windows, for SAME and VALID, strides, dilations, odd filters and a batch of 2."""
    from edgefashion.device import numpy_interpreter as ni

    rng = np.random.default_rng(4)
    for h, w, kh, kw, sh, sw, dh, dw, padding in [
            (9, 9, 3, 3, 1, 1, 1, 1, 0), (9, 11, 3, 3, 1, 1, 1, 1, 1), (12, 10, 5, 3, 1, 1, 2, 1, 0),
            (10, 12, 3, 3, 1, 1, 2, 2, 1), (8, 8, 1, 1, 1, 1, 1, 1, 0), (12, 12, 3, 3, 2, 2, 1, 1, 0),
            (11, 9, 3, 3, 2, 2, 1, 1, 1), (13, 10, 3, 5, 2, 1, 1, 1, 0), (10, 13, 3, 3, 1, 2, 1, 1, 0)]:
        x = rng.integers(-255, 256, (2, h, w, 6)).astype(np.float32)
        weights = rng.integers(-127, 128, (kh, kw, 6)).astype(np.float32)
        o = {"stride_h": sh, "stride_w": sw, "dilation_h_factor": dh, "dilation_w_factor": dw, "padding": padding}
        want = np.einsum("nhwklc,klc->nhwc", ni._windows(x, kh, kw, o), weights)
        assert np.array_equal(ni._depthwise_taps(x, weights, o), want), (h, w, kh, kw, sh, sw, dh, dw, padding)


def test_long_integer_products_are_exact_on_every_path():
    """A product whose static bound passes 2**24 is one float32 product when the inputs' norms prove
    every partial sum stays below it, and int64 sums of float32 chunks when they do not: both equal
    the int64 product, and the chosen path is the one the bound says."""
    rng = np.random.default_rng(5)
    weights = rng.integers(-127, 128, (9680, 20))
    matmul = k.IntMatmul(weights)
    assert matmul.bound is None  # 9680 x 255 x 127 > 2**24
    sparse = np.where(rng.random((3, 9680)) < 0.015, rng.integers(0, 256, (3, 9680)), 0).astype(np.float32)
    dense = rng.integers(200, 256, (3, 9680)).astype(np.float32)
    assert matmul._within(sparse) and not matmul._within(dense)
    for x in (sparse, dense):
        got = matmul(x)
        assert got.dtype == (np.float32 if x is sparse else np.int64)
        assert np.array_equal(got.astype(np.int64), x.astype(np.int64) @ weights)
    # denser than the whole-sum bound allows, sparse enough for a few slices, each a proven product
    middle = np.where(rng.random((3, 9680)) < 0.04, rng.integers(0, 256, (3, 9680)), 0).astype(np.float32)
    assert not matmul._within(middle) and matmul._slices_within(middle) is not None
    assert matmul._slices_within(dense) is None
    assert np.array_equal(matmul(middle), middle.astype(np.int64) @ weights)
    small = k.IntMatmul(rng.integers(-127, 128, (300, 8)))
    assert small.bound == 300 * 255 * 127 and small(dense[:, :300]).dtype == np.float32
