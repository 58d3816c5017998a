"""Run a full-integer int8 .tflite model with numpy alone, value for value as TFLite's reference
kernels do. For boards with no LiteRT or ONNX Runtime wheel (32-bit Raspberry Pi OS, riscv64, a
brand-new Python): numpy is all it needs. Float models run too, in float32 (close to, not bitwise
equal with, other interpreters: sums are added in another order), so the int8-vs-float
cross-check works there as well.

Each operator is compiled once into a function with its multipliers, shifts, activation range and
weight matrix ready; `run` then applies them in graph order. An operator or option outside the
supported set is refused when the model loads, naming it: never a wrong answer.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

from ..errors import InputError, Unsupported
from . import numpy_kernels as k
from .tflite_file import Operator, Tensor, read

SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "MEAN",
             "SOFTMAX", "LOGISTIC", "RESHAPE", "SHAPE", "STRIDED_SLICE", "PACK", "QUANTIZE", "DEQUANTIZE")


FLAVORS = ("litert", "tflm")


class NumpyInterpreter:
    """interpreter-like: `input`/`output` tensors of the graph, and run(x) -> output array.

    `flavor` picks whose reference arithmetic to reproduce. They differ in one place: LiteRT's int8
    fully-connected kernel rounds its requantization once, TensorFlow Lite Micro's twice (measured:
    TFLM and LiteRT's reference kernels differ in 3 of 10,000 seed-CNN outputs; each equals this
    interpreter in its own flavor, 0 differing values)."""

    def __init__(self, content: bytes, name: str, flavor: str = "litert"):
        if flavor not in FLAVORS:
            raise InputError(f"flavor {flavor!r}, expected one of {', '.join(FLAVORS)}")
        self.name, self.flavor = name, flavor
        self.graph = read(content, name)
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise InputError(f"{name}: {len(self.graph.inputs)} inputs and {len(self.graph.outputs)} outputs, "
                             f"expected 1 and 1")
        self.input = self.graph.tensors[self.graph.inputs[0]]
        self.output = self.graph.tensors[self.graph.outputs[0]]
        if not ((self.input.dtype is np.int8 and self.input.scale is not None) or self.input.dtype is np.float32):
            raise Unsupported(f"{name}: the numpy backend runs int8 and float32 models; this one takes "
                              f"{np.dtype(self.input.dtype).name} input")
        self.steps = [(op, self._compile(op)) for op in self.graph.operators]
        # each step's inputs as (tensor index, constant or None), looked up once here, not every run
        self._plan = [(step, op.outputs[0], [(i, self.graph.tensors[i].data) for i in op.inputs if i >= 0])
                      for op, step in self.steps]
        self._shape_only = _shape_only(self.graph)
        self._shapes: tuple | None = None  # (input shape, the shape-only tensors' values for it)

    def _compile(self, op: Operator):
        if op.op not in SUPPORTED:
            raise Unsupported(f"{self.name}: operator {op.op} is not supported by the numpy backend "
                             f"(supported: {', '.join(SUPPORTED)})")
        tensors = [self.graph.tensors[i] if i >= 0 else None for i in op.inputs]
        out = self.graph.tensors[op.outputs[0]]
        try:
            floating = tensors[0].dtype is np.float32 and op.op in FLOAT_BUILDERS
            options = {**op.options, "flavor": self.flavor}
            return (FLOAT_BUILDERS if floating else BUILDERS)[op.op](tensors, out, options)
        except InputError as exc:  # Unsupported stays Unsupported: selftest reports it as skipped
            raise (Unsupported if isinstance(exc, Unsupported) else InputError)(f"{self.name}: {op.op}: {exc}") from None
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise InputError(f"{self.name}: {op.op} with inputs {op.inputs} is malformed or unsupported "
                             f"({type(exc).__name__})") from None

    def run(self, x: np.ndarray, timings: list | None = None) -> np.ndarray:
        """The output for input x. `timings`, a list: one (operator index, ns) per operator run is
        added (operators that follow from the input shape alone run once per shape)."""
        values = {self.graph.inputs[0]: x}
        with np.errstate(all="ignore"):  # a malformed model may overflow; it must not print warnings
            return self._run(values, x.shape, timings)

    def _run(self, values: dict, shape: tuple, timings: list | None) -> np.ndarray:
        known = self._shapes[1] if self._shapes is not None and self._shapes[0] == shape else None
        if known:
            values.update(known)
        for index, (step, out, inputs) in enumerate(self._plan):
            if known and out in known:
                continue
            args = [values.get(i) if const is None else const for i, const in inputs]
            if timings is None:
                values[out] = step(*args)
            else:
                start = time.perf_counter_ns()
                values[out] = step(*args)
                timings.append((index, time.perf_counter_ns() - start))
        if known is None and self._shape_only:
            self._shapes = (shape, {i: values[i] for i in self._shape_only})
        return values[self.graph.outputs[0]]


def _shape_only(graph) -> set[int]:
    """Tensors whose values follow from the input's shape alone: SHAPE's outputs and what STRIDED_SLICE,
    PACK and RESHAPE make of them and of constants (a Keras Flatten's target shape). Computed once per
    input shape instead of four small operators a run."""
    only: set[int] = set()
    for op in graph.operators:
        inputs = [i for i in op.inputs if i >= 0]
        if op.op == "SHAPE" or (op.op in ("STRIDED_SLICE", "PACK", "RESHAPE") and inputs and all(
                i in only or graph.tensors[i].data is not None for i in inputs)):
            only.add(op.outputs[0])
    return only


# --- operator builders: (input tensors, output tensor, options) -> function of input arrays ----

MAX_SCALE = 1e10  # a scale this large (or zero, or not finite) turns every value into a wrong answer


def _int8(t: Tensor, what: str) -> None:
    if t.dtype is not np.int8 or t.scale is None:
        raise InputError(f"{what} {t.name!r} is {np.dtype(t.dtype).name} without int8 quantization; "
                         f"the numpy backend runs full-integer int8 models")
    scales = np.asarray(t.scale, dtype=np.float64)
    if not (np.isfinite(scales).all() and (scales > 0).all() and (scales < MAX_SCALE).all()):
        raise InputError(f"{what} {t.name!r} has quantization scale {scales.min():g}..{scales.max():g}, expected "
                         f"positive and finite")


def _zp(t: Tensor) -> int:
    return int(t.zero_point[0])


def _per_channel(x_t: Tensor, w_t: Tensor, out_t: Tensor, channels: int):
    """Multipliers and shifts per output channel: input * filter scale / output scale, in double."""
    scales = np.broadcast_to(w_t.scale.astype(np.float64), (channels,))
    return _multipliers(float(x_t.scale[0]) * s / float(out_t.scale[0]) for s in scales)


def _multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """(multipliers, shifts) of real multipliers, as int64 arrays."""
    pairs = [k.quantize_multiplier(float(real)) for real in reals]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def _windows(x: np.ndarray, kh: int, kw: int, o: dict) -> np.ndarray:
    """(N, OH, OW, KH, KW, C) windows with the operator's strides, dilation and padding."""
    return k.windows(x, kh, kw, o["stride_h"], o["stride_w"], o["dilation_h_factor"], o["dilation_w_factor"],
                     o["padding"])


def _columns(x: np.ndarray, kh: int, kw: int, o: dict) -> tuple[np.ndarray, tuple]:
    """im2col: one row per output position, (kh, kw, channel) order as TFLite lays out conv filters."""
    win = _windows(x, kh, kw, o)
    n, oh, ow = win.shape[:3]
    return win.reshape(n * oh * ow, kh * kw * win.shape[5]), (n, oh, ow)


def _depthwise(x: np.ndarray, weights: np.ndarray, mult: int, o: dict) -> np.ndarray:
    """Each input channel (repeated `mult` times) against its own (kh, kw) filter: a few products a sum."""
    if mult > 1:
        x = np.repeat(x, mult, axis=3)
    if x.shape[1] * x.shape[2] >= 64:
        return _depthwise_taps(x, weights, o)
    return np.einsum("nhwklc,klc->nhwc", _windows(x, *weights.shape[:2], o), weights)


def _depthwise_taps(x: np.ndarray, weights: np.ndarray, o: dict) -> np.ndarray:
    """Tap by tap: each filter tap's weights times a strided view of the image, summed in place; 2-5x
    faster than the einsum over windows, whose innermost loop is only C long. At stride 1 a tap's view
    is whole rows (OW x C contiguous values) against the tap's weights repeated along the row."""
    kh, kw, c = weights.shape
    sh, sw, dh, dw = o["stride_h"], o["stride_w"], o["dilation_h_factor"], o["dilation_w_factor"]
    x, oh, ow = k.padded(x, kh, kw, sh, sw, dh, dw, o["padding"])
    n = x.shape[0]
    if sw == 1:
        rows, taps = x.reshape(n, x.shape[1], -1), np.tile(weights, (1, 1, ow))  # taps: (kh, kw, OW * C)
        def view(i, j):
            return rows[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw * c:(j * dw + ow) * c]
        shape = (n, oh, ow * c)
    else:
        taps = weights
        def view(i, j):
            return x[:, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw]
        shape = (n, oh, ow, c)
    acc, term = np.zeros(shape, weights.dtype), np.empty(shape, weights.dtype)
    for i in range(kh):
        for j in range(kw):
            np.multiply(view(i, j), taps[i, j], out=term)
            acc += term
    return acc.reshape(n, oh, ow, c)


def _bias(b_t: Tensor | None, channels: int) -> np.ndarray:
    if b_t is None:
        return np.zeros(channels, np.int64)
    return b_t.data.astype(np.int64).reshape(channels)


def conv_2d(tensors, out_t, o):
    x_t, w_t, b_t = (tensors + [None])[:3]
    for t, what in ((x_t, "input"), (w_t, "filter"), (out_t, "output")):
        _int8(t, what)
    cout, kh, kw, _ = w_t.shape
    if np.any(w_t.zero_point != 0):
        raise InputError("filter zero points must be 0 (symmetric int8 weights)")
    zp_in, zp_out = _zp(x_t), _zp(out_t)
    act = k.activation_range(o["fused_activation_function"], float(out_t.scale[0]), zp_out)
    matmul = k.IntMatmul(w_t.data.reshape(cout, -1).T)  # rows in (kh, kw, cin) order
    requantize = k.Requantize(*_per_channel(x_t, w_t, out_t, cout), zp_out, act, bias=_bias(b_t, cout),
                              max_acc=matmul.bound)

    def run(x, *_):
        cols, (n, oh, ow) = _columns(x.astype(np.float32) - zp_in, kh, kw, o)
        return requantize(matmul(cols)).reshape(n, oh, ow, cout)
    return run


def depthwise_conv_2d(tensors, out_t, o):
    x_t, w_t, b_t = (tensors + [None])[:3]
    for t, what in ((x_t, "input"), (w_t, "filter"), (out_t, "output")):
        _int8(t, what)
    cout = w_t.shape[3]
    mult = o["depth_multiplier"] or cout // x_t.shape[3]
    zp_in, zp_out = _zp(x_t), _zp(out_t)
    act = k.activation_range(o["fused_activation_function"], float(out_t.scale[0]), zp_out)
    kh, kw = w_t.shape[1:3]
    max_acc = kh * kw * 255 * max(int(np.abs(w_t.data.astype(np.int64)).max(initial=0)), 1)
    requantize = k.Requantize(*_per_channel(x_t, w_t, out_t, cout), zp_out, act, bias=_bias(b_t, cout),
                              max_acc=max_acc)
    # (kh, kw, cout): a few products a sum, exact in float32; a kernel so large that a sum could pass
    # 2**24 is summed in float64 (exact to 2**53) and requantized by the integer formulas
    exact = np.float32 if max_acc < k.FLOAT32_EXACT else np.float64
    weights = w_t.data[0].astype(exact)

    def run(x, *_):
        return requantize(_depthwise(x.astype(exact) - zp_in, weights, mult, o))
    return run


def fully_connected(tensors, out_t, o):
    x_t, w_t, b_t = (tensors + [None])[:3]
    for t, what in ((x_t, "input"), (w_t, "weights"), (out_t, "output")):
        _int8(t, what)
    if o["weights_format"] != 0:
        raise InputError("shuffled weights are not supported")
    cout, depth = w_t.shape
    if np.any(w_t.zero_point != 0):
        raise InputError("weight zero points must be 0 (symmetric int8 weights)")
    # GetQuantizedConvolutionMultipler: the scale product is a float32 product, per channel or not
    scales = np.float32(x_t.scale[0]) * np.broadcast_to(w_t.scale.astype(np.float32), (cout,))
    multipliers, shifts = _multipliers(float(s) / float(out_t.scale[0]) for s in scales)
    zp_in, zp_out = _zp(x_t), _zp(out_t)
    act = k.activation_range(o["fused_activation_function"], float(out_t.scale[0]), zp_out)
    matmul = k.IntMatmul(w_t.data.T)
    requantize = k.Requantize(multipliers, shifts, zp_out, act, once=o["flavor"] == "litert", bias=_bias(b_t, cout),
                              max_acc=matmul.bound)

    def run(x, *_):
        rows = x.reshape(-1, depth).astype(np.float32) - zp_in
        out = requantize(matmul(rows))
        return out.reshape(*x.shape[:-1], cout) if o["keep_num_dims"] else out
    return run


def _pool(tensors, out_t, o, reduce):
    x_t = tensors[0]
    _int8(x_t, "input")
    _int8(out_t, "output")
    act = k.activation_range(o["fused_activation_function"], float(out_t.scale[0]), _zp(out_t))
    size = (o["filter_height"], o["filter_width"], o["stride_h"], o["stride_w"], 1, 1, o["padding"])
    if min(size[:4]) < 1:
        raise InputError(f"pooling filter {size[0]}x{size[1]}, stride {size[2]}x{size[3]}: expected at least 1 "
                         f"(LiteRT refuses it too)")

    def run(x, *_):
        return k.clip(reduce(x, size), *act).astype(np.int8)
    return run


def _taps(x: np.ndarray, size: tuple) -> list[np.ndarray] | None:
    """A pool that needs no padding (VALID, or SAME where the windows fit, as 2x2/2 on even sizes) as
    its kh x kw strided views of x, one per window position, each (N, OH, OW, C): an elementwise max
    or sum of a few views, several times faster than reducing a sliding-window view. None when the
    pool pads (the sliding windows then)."""
    fh, fw, sh, sw, _, _, padding = size
    n, h, w, c = x.shape
    (oh, top), (ow, left) = k.output_size(h, fh, sh, 1, padding), k.output_size(w, fw, sw, 1, padding)
    if oh < 1 or ow < 1 or top or left or (oh - 1) * sh + fh > h or (ow - 1) * sw + fw > w:
        return None
    return [x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw] for i in range(fh) for j in range(fw)]


def _rounded_mean(total: np.ndarray, count) -> np.ndarray:
    """total / count rounded half away from zero, in integers (reference_ops::AveragePool)."""
    return np.where(total > 0, (total + count // 2) // count, -((-total + count // 2) // count))


@functools.lru_cache(maxsize=64)
def _cells(hw: tuple, size: tuple, dtype) -> np.ndarray:
    """How many cells of each padded window lie inside the image, (1, OH, OW, 1): once per shape."""
    cells = k.windows(np.ones((1, *hw, 1), dtype), *size).sum(axis=(3, 4))
    cells.setflags(write=False)  # shared by every call
    return cells


def max_pool_2d(tensors, out_t, o):
    def reduce(x, size):  # padding cells never win: pad with the smallest int
        taps = _taps(x, size)
        if taps is not None:
            return functools.reduce(np.maximum, taps) if len(taps) > 1 else taps[0].copy()  # clipped in place
        return k.windows(x, *size, fill=-128).max(axis=(3, 4))  # -128 wins only where every cell is -128
    return _pool(tensors, out_t, o, reduce)


def average_pool_2d(tensors, out_t, o):
    if tensors[0].scale[0] != out_t.scale[0] or _zp(tensors[0]) != _zp(out_t):
        raise InputError("input and output quantization must match")

    def reduce(x, size):  # only cells inside the image count; round half away from zero
        taps = _taps(x, size)
        if taps is not None:
            return _rounded_mean(functools.reduce(np.add, (t.astype(np.int32) for t in taps)), len(taps))
        total = k.windows(x.astype(np.int32), *size).sum(axis=(3, 4))
        return _rounded_mean(total, _cells(x.shape[1:3], size, np.int32))
    return _pool(tensors, out_t, o, reduce)


def add(tensors, out_t, o):
    a_t, b_t = tensors
    for t, what in ((a_t, "input"), (b_t, "input"), (out_t, "output")):
        _int8(t, what)
    left_shift = 20
    twice_max = float(2 * max(np.float32(a_t.scale[0]), np.float32(b_t.scale[0])))
    m_a = k.quantize_multiplier(float(a_t.scale[0]) / twice_max)
    m_b = k.quantize_multiplier(float(b_t.scale[0]) / twice_max)
    m_out = k.quantize_multiplier(twice_max / float(np.float32((1 << left_shift) * np.float32(out_t.scale[0]))))
    za, zb, zo = _zp(a_t), _zp(b_t), _zp(out_t)
    act = k.activation_range(o["fused_activation_function"], float(out_t.scale[0]), zo)

    def exact(a, b):
        sa = k.multiply((a - za) << left_shift, *m_a)
        sb = k.multiply((b - zb) << left_shift, *m_b)
        return np.clip(k.multiply(sa + sb, *m_out) + zo, act[0], act[1]).astype(np.int8)
    # the sum of two int8 tensors takes 256 x 256 values: computed once by the formulas above, looked up
    values = np.arange(-128, 128, dtype=np.int64)
    table = exact(values[:, None], values[None, :]).ravel()  # index (a + 128) * 256 + (b + 128)

    def run(a, b):
        if a.shape != b.shape:  # broadcasting: the formulas on the broadcast values
            return exact(a.astype(np.int64), b.astype(np.int64))
        index = a.astype(np.intp)
        index <<= 8
        index += b
        index += 128 * 256 + 128
        return table[index]
    return run


def mean(tensors, out_t, o):
    x_t, axes_t = tensors
    _int8(x_t, "input")
    _int8(out_t, "output")
    axes = tuple(sorted({int(a) % len(x_t.shape) for a in np.atleast_1d(axes_t.data)}))
    multiplier, shift = k.quantize_multiplier(float(x_t.scale[0]) / float(out_t.scale[0]))
    zp_in, zp_out = _zp(x_t), _zp(out_t)

    @functools.lru_cache(maxsize=8)
    def folded(count: int) -> tuple[int, int]:  # reference_ops::QuantizedMeanOrSum: 1/count in the multiplier
        bits = min(count.bit_length() - 1, 32, 31 + shift)
        return (multiplier << bits) // count, shift - bits

    def run(x, *_):
        count = math.prod(x.shape[a] for a in axes)
        total = x.astype(np.int64).sum(axis=axes, keepdims=bool(o["keep_dims"])) - zp_in * count
        out = k.multiply(total, *folded(count)) + zp_out
        return k.clip(out, -128, 127).astype(np.int8)
    return run


def softmax(tensors, out_t, o):
    x_t = tensors[0]
    _int8(x_t, "input")
    _int8(out_t, "output")
    if _zp(out_t) != -128 or abs(float(out_t.scale[0]) - 1 / 256) > 0.001 / 256:
        raise InputError("int8 softmax output must have scale 1/256 and zero point -128")
    if not (np.isfinite(o["beta"]) and o["beta"] > 0):
        raise InputError(f"softmax beta {o['beta']}, expected a positive number (LiteRT's kernels abort on it)")
    return k.SoftmaxInt8(float(o["beta"]), float(x_t.scale[0]))


def logistic(tensors, out_t, o):
    """LiteRT's int8 LOGISTIC is a table (LUTPopulate): at each int8 input, 1 / (1 + exp(-x)) in float32,
    rounded half away from zero onto the output's 1/256 grid. TFLM computes it in fixed point instead."""
    x_t = tensors[0]
    _int8(x_t, "input")
    _int8(out_t, "output")
    if o["flavor"] != "litert":
        raise Unsupported("int8 LOGISTIC in TensorFlow Lite Micro's fixed-point arithmetic is not supported")
    if _zp(out_t) != -128 or float(out_t.scale[0]) != 1 / 256:
        raise InputError("int8 logistic output must have scale 1/256 and zero point -128")
    f32 = np.float32
    x = f32(x_t.scale[0]) * (np.arange(-128, 128) - _zp(x_t)).astype(f32)
    with np.errstate(over="ignore"):  # past float32's range expf gives inf too, and 1 / (1 + inf) is 0
        e = np.exp(-x.astype(np.float64)).astype(f32)  # expf, correctly rounded: exp in float64, then float32
    y = (f32(1) / (f32(1) + e)) * (f32(1) / f32(out_t.scale[0]))
    table = np.clip(_round_away(y) - 128, -128, 127).astype(np.int8)
    return lambda v: table[v.astype(np.intp) + 128]


def reshape(tensors, out_t, o):
    static = o.get("new_shape")

    def run(x, shape=None):
        new = [int(v) for v in (shape if shape is not None else static or out_t.shape)]
        if -1 not in new and len(new) == len(out_t.shape) and new[0] == out_t.shape[0] != len(x):
            new[0] = -1  # a shape recorded for batch 1
        return x.reshape(new)
    return run


def shape(tensors, out_t, o):
    return lambda x: np.array(x.shape, np.int32)


def strided_slice(tensors, out_t, o):
    if o["ellipsis_mask"] or o["new_axis_mask"] or o["offset"]:
        raise InputError("ellipsis, new-axis and offset masks are not supported")

    def run(x, begin, end, strides):
        index = []
        for axis in range(len(begin)):
            lo = None if o["begin_mask"] >> axis & 1 else int(begin[axis])
            hi = None if o["end_mask"] >> axis & 1 else int(end[axis])
            if o["shrink_axis_mask"] >> axis & 1:
                index.append(lo or 0)
            else:
                index.append(slice(lo, hi, int(strides[axis])))
        return np.asarray(x[tuple(index)])
    return run


def pack(tensors, out_t, o):
    return lambda *xs: np.stack(xs, axis=o["axis"])


def quantize(tensors, out_t, o):
    x_t = tensors[0]
    _int8(out_t, "output")
    scale, zp = np.float32(out_t.scale[0]), _zp(out_t)
    if x_t.dtype is np.float32:  # reference_ops::AffineQuantize: round(x / scale) + zero point
        return lambda x: np.clip(_round_away(x.astype(np.float32) / scale) + zp, -128, 127).astype(np.int8)
    _int8(x_t, "input")  # int8 -> int8 requantization
    multiplier, shift = k.quantize_multiplier(float(x_t.scale[0]) / float(out_t.scale[0]))
    zp_in = _zp(x_t)
    table = k.int8_table(lambda v: np.clip(k.multiply(v - zp_in, multiplier, shift) + zp, -128, 127))
    return lambda x: table[x.astype(np.intp) + 128]


def dequantize(tensors, out_t, o):
    x_t = tensors[0]
    _int8(x_t, "input")
    scale, zp = float(x_t.scale[0]), _zp(x_t)
    return lambda x: (scale * (x.astype(np.float64) - zp)).astype(np.float32)


def _round_away(x: np.ndarray) -> np.ndarray:
    return (np.sign(x) * np.floor(np.abs(x.astype(np.float64)) + 0.5)).astype(np.int64)


BUILDERS = {"CONV_2D": conv_2d, "DEPTHWISE_CONV_2D": depthwise_conv_2d, "FULLY_CONNECTED": fully_connected,
            "AVERAGE_POOL_2D": average_pool_2d, "MAX_POOL_2D": max_pool_2d, "ADD": add, "MEAN": mean,
            "SOFTMAX": softmax, "LOGISTIC": logistic, "RESHAPE": reshape, "SHAPE": shape, "STRIDED_SLICE": strided_slice,
            "PACK": pack, "QUANTIZE": quantize, "DEQUANTIZE": dequantize}


# --- float32 models --------------------------------------------------------------------------

def _float_act(fused: int):
    limits = {0: (None, None), 1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}
    if fused not in limits:
        raise InputError(f"fused activation {fused} is not supported by the numpy backend")
    lo, hi = limits[fused]
    return lambda y: y if lo is None and hi is None else np.clip(y, lo, hi)


def _float_bias(b_t: Tensor | None, channels: int) -> np.ndarray:
    return np.zeros(channels, np.float32) if b_t is None else b_t.data.astype(np.float32).reshape(channels)


def conv_2d_f32(tensors, out_t, o):
    _, w_t, b_t = (tensors + [None])[:3]
    cout, kh, kw, _ = w_t.shape
    weights, bias = w_t.data.reshape(cout, -1).T.astype(np.float32), _float_bias(b_t, cout)
    act = _float_act(o["fused_activation_function"])

    def run(x, *_):
        cols, (n, oh, ow) = _columns(x, kh, kw, o)
        return act(cols @ weights + bias).reshape(n, oh, ow, cout).astype(np.float32)
    return run


def depthwise_conv_2d_f32(tensors, out_t, o):
    x_t, w_t, b_t = (tensors + [None])[:3]
    cout = w_t.shape[3]
    mult = o["depth_multiplier"] or cout // x_t.shape[3]
    weights, bias = w_t.data[0].astype(np.float32), _float_bias(b_t, cout)
    act = _float_act(o["fused_activation_function"])

    def run(x, *_):
        return act(_depthwise(x, weights, mult, o) + bias).astype(np.float32)
    return run


def fully_connected_f32(tensors, out_t, o):
    _, w_t, b_t = (tensors + [None])[:3]
    cout, depth = w_t.shape
    weights, bias = w_t.data.astype(np.float32), _float_bias(b_t, cout)  # (outputs, terms): see IntMatmul
    act = _float_act(o["fused_activation_function"])

    def run(x, *_):
        out = act(x.reshape(-1, depth) @ weights.T + bias).astype(np.float32)
        return out.reshape(*x.shape[:-1], cout) if o["keep_num_dims"] else out
    return run


def _pool_f32(o, reduce):
    act = _float_act(o["fused_activation_function"])
    size = (o["filter_height"], o["filter_width"], o["stride_h"], o["stride_w"], 1, 1, o["padding"])
    return lambda x, *_: act(reduce(x, size)).astype(np.float32)


def max_pool_2d_f32(tensors, out_t, o):
    def reduce(x, size):
        taps = _taps(x, size)
        return functools.reduce(np.maximum, taps) if taps else k.windows(x, *size, fill=-np.inf).max(axis=(3, 4))
    return _pool_f32(o, reduce)


def average_pool_2d_f32(tensors, out_t, o):
    def reduce(x, size):  # the mean of the cells inside the image
        taps = _taps(x, size)
        if taps is not None:
            return functools.reduce(np.add, taps) / np.float32(len(taps))
        return k.windows(x, *size).sum(axis=(3, 4)) / _cells(x.shape[1:3], size, np.float32)
    return _pool_f32(o, reduce)


def add_f32(tensors, out_t, o):
    act = _float_act(o["fused_activation_function"])
    return lambda a, b: act(a + b).astype(np.float32)


def mean_f32(tensors, out_t, o):
    axes = tuple(sorted(int(a) % len(tensors[0].shape) for a in np.atleast_1d(tensors[1].data)))
    return lambda x, *_: x.mean(axis=axes, keepdims=bool(o["keep_dims"]), dtype=np.float32)


def softmax_f32(tensors, out_t, o):
    beta = np.float32(o["beta"])

    def run(x):
        e = np.exp((x - x.max(axis=-1, keepdims=True)) * beta)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return run


def logistic_f32(tensors, out_t, o):
    return lambda x: (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32)


FLOAT_BUILDERS = {"CONV_2D": conv_2d_f32, "DEPTHWISE_CONV_2D": depthwise_conv_2d_f32,
                  "FULLY_CONNECTED": fully_connected_f32, "AVERAGE_POOL_2D": average_pool_2d_f32,
                  "MAX_POOL_2D": max_pool_2d_f32, "ADD": add_f32, "MEAN": mean_f32, "SOFTMAX": softmax_f32,
                  "LOGISTIC": logistic_f32}
