"""TFLite's reference integer kernels, in numpy: the same integers as LiteRT's BUILTIN_REF resolver.

The arithmetic follows tensorflow/lite/kernels/internal (quantization_util, reference_integer_ops)
and gemmlowp's fixedpoint.h: a real multiplier becomes a 31-bit fixed-point number and a shift.
Most kernels round twice (a rounding doubling high multiply, then a rounding right shift); the
int8 fully-connected reference kernel of LiteRT rounds once, at the final shift. Both were told
apart by measurement against LiteRT's BUILTIN_REF kernels: the other variant differs in 8 of
100,000 dense-layer values, or in 8,297 of 8.1 M first-convolution values.
Sums of products are computed as float32 matrix products of integer values: exact while every
partial sum stays below 2**24, which `IntMatmul` proves per layer from the largest weight, or per
call from the norms of the inputs and the weights; sums it cannot prove are split into chunks that
each stay below 2**24 and added as int64.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
FLOAT32_EXACT = 2 ** 24


# --- fixed-point helpers (vectorized over int64 arrays holding int32 values) -----------------

def quantize_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier: real = q * 2**(shift - 31), q a 31-bit integer (std::round: half away)."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    q = math.floor(fraction * (1 << 31) + 0.5)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def high_mul(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul. Its nudge (+2**30, or 1 - 2**30 for negative
    products) and C++ truncation toward zero come to (a * b + 2**30) >> 31 for either sign. The one
    saturating case, a == b == INT32_MIN, cannot arise here: one operand is always a positive
    multiplier or a positive fixed-point value."""
    return (np.asarray(a, np.int64) * b + (1 << 30)) >> 31


def shift_round(x, exponent):
    """gemmlowp RoundingDivideByPOT: x / 2**exponent, rounded to nearest, ties away from zero."""
    x = np.asarray(x, np.int64)
    mask = (1 << exponent) - 1 if isinstance(exponent, int) else np.left_shift(np.int64(1), exponent) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + ((x & mask) > threshold)


def multiply(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier, double rounding."""
    if isinstance(shift, int):  # one multiplier: the shifts in Python, not as numpy scalars
        left, right = max(shift, 0), max(-shift, 0)
    else:
        left, right = np.maximum(shift, 0), np.maximum(-np.asarray(shift), 0)
    return shift_round(high_mul(np.asarray(x, np.int64) << left, multiplier), right)


def multiply_once(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier, single rounding: (x * multiplier + 2**(30 - shift)) >> (31 - shift)."""
    total = 31 - np.asarray(shift, np.int64)
    return (np.asarray(x, np.int64) * multiplier + np.left_shift(np.int64(1), total - 1)) >> total


def saturating_shift(x, exponent: int):
    """gemmlowp SaturatingRoundingMultiplyByPOT: x * 2**exponent, saturating (or rounding when < 0)."""
    if exponent < 0:
        return shift_round(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def round_half_away(value: float) -> int:
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def activation_range(fused: int, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 outputs (the float division is float32, as in C++)."""
    def quantize(f):
        return zero_point + round_half_away(float(np.float32(f) / np.float32(scale)))
    lo, hi = -128, 127
    if fused == 0:
        return lo, hi
    if fused == 1:  # RELU
        return max(lo, quantize(0.0)), hi
    if fused == 2:  # RELU_N1_TO_1
        return max(lo, quantize(-1.0)), min(hi, quantize(1.0))
    if fused == 3:  # RELU6
        return max(lo, quantize(0.0)), min(hi, quantize(6.0))
    raise InputError(f"fused activation {fused} is not supported by the numpy backend")


class Requantize:
    """int32 accumulators -> int8: add the bias, multiply by the fixed-point multiplier (per channel,
    last axis), add the zero point, clamp; exactly `multiply` (or `multiply_once`).

    Fast path, for float32 accumulators (exact integers below 2**24): y = acc * real multiplier in
    float32, rounded. That equals the exact result except within `margin` of a rounding tie: the
    first of two roundings moves a value by at most 2**-(e+1) output steps (e the right shift), and
    float32 adds at most |y| * 2**-23 (< 2**-13 where the result is not clamped anyway). Those few
    values (about 0.4 % for the seed CNN) are recomputed with the exact int64 formulas."""

    def __init__(self, multipliers, shifts, zero_point: int, act: tuple[int, int], once: bool = False,
                 bias=None, max_acc: int | None = None):
        self.multipliers, self.shifts = np.asarray(multipliers, np.int64), np.asarray(shifts, np.int64)
        self.bias = None if bias is None else np.asarray(bias, np.int64)
        self.once, self.zero_point, self.act = once, zero_point, act
        self.real = (self.multipliers * np.exp2(self.shifts - 31.0)).astype(np.float32)
        # first rounding: at most 2**-(e+1) steps with e = -shift the right shift; float32: 2**-12 of margin
        margin = 2.0 ** -12 + (0.0 if once else np.exp2(self.shifts - 1.0))
        self.fast = bool(np.all(margin < 0.25))
        self.threshold = (0.5 - np.broadcast_to(margin, self.shifts.shape)).astype(np.float32)
        self.bias32 = None if self.bias is None else self.bias.astype(np.float32)
        self.max_bias = 0 if self.bias is None else int(np.abs(self.bias).max(initial=0))
        # `max_acc`: the largest |accumulator| the product before can give; below 2**24 with the bias,
        # every float32 accumulator takes the fast path without looking at its values first
        self.always_fast = self.fast and max_acc is not None and max_acc + self.max_bias < FLOAT32_EXACT
        self._tiles: dict = {}
        # per channel, for the few values near a tie: bias, multiplier, left shift, right shift, its mask
        right = np.maximum(-self.shifts, 0) if not once else 31 - self.shifts
        self._few = np.stack(np.broadcast_arrays(
            self.bias if self.bias is not None else np.int64(0), self.multipliers,
            np.maximum(self.shifts, 0) if not once else np.int64(0), right, (np.int64(1) << right) - 1), axis=1)
        self._few_rows = self._few.tolist()

    def exact(self, acc, channels=slice(None)) -> np.ndarray:
        t = np.asarray(acc).astype(np.int64)
        if self.bias is not None:
            t = t + self.bias[channels]
        step = multiply_once if self.once else multiply
        return step(t, self.multipliers[channels], self.shifts[channels])

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        if acc.dtype == np.float32 and (self.always_fast or self.fast and float(np.abs(acc).max(initial=0))
                                        + self.max_bias < FLOAT32_EXACT):
            q = self._fast(acc)
        else:
            q = self.exact(acc).astype(np.float32)  # values far outside int8 clamp the same in float32
        q += self.zero_point
        clip(q, *self.act)
        return q.astype(np.int8)

    def _fast(self, acc: np.ndarray) -> np.ndarray:
        channels = acc.shape[-1]
        bias, real, threshold = self._tiled(acc.size, channels)
        y = acc.reshape(-1) + bias if bias is not None else acc.reshape(-1).copy()
        y *= real
        q = np.rint(y)
        y -= q
        np.abs(y, out=y)                                # distance to the nearest integer: 0.5 at a tie
        near = y > threshold
        if near.any():
            where = np.flatnonzero(near)
            q[where] = self._exact_few(acc.reshape(-1)[where], where % channels)
        return q.reshape(acc.shape)

    def _exact_few(self, acc: np.ndarray, channels: np.ndarray) -> np.ndarray:
        """`exact` for a few values (1-D) with one lookup of their channels' constants: the values near
        a tie, ~3x faster than the general formulas on so few."""
        if len(acc) <= FEW_IN_PYTHON:
            return np.array([self._exact_one(int(a), c) for a, c in zip(acc.tolist(), channels.tolist())], np.int64)
        bias, multiplier, left, right, mask = self._few[channels].T
        t = acc.astype(np.int64) + bias
        if self.once:  # (t * m + 2**(30 - shift)) >> (31 - shift)
            t *= multiplier
            t += (mask >> 1) + 1
            return t >> right
        t <<= left
        t *= multiplier
        t += 1 << 30
        t >>= 31
        return (t >> right) + ((t & mask) > (mask >> 1) + (t < 0))

    def _exact_one(self, acc: int, channel: int) -> int:
        """`_exact_few` for one value, in Python ints (a handful cost less so than a dozen numpy calls)."""
        bias, multiplier, left, right, mask = self._few_rows[channel]
        t = acc + bias
        if self.once:
            return (t * multiplier + (mask >> 1) + 1) >> right
        t = ((t << left) * multiplier + (1 << 30)) >> 31
        return (t >> right) + ((t & mask) > (mask >> 1) + (t < 0))

    def _tiled(self, size: int, channels: int) -> tuple:
        """The per-channel bias, multiplier and threshold repeated over `size` values: elementwise
        products of whole arrays, several times faster than broadcasting a short last axis."""
        tiled = self._tiles.get(size)
        if tiled is None:
            reps = size // channels
            tiled = (None if self.bias32 is None else np.tile(np.broadcast_to(self.bias32, (channels,)), reps),
                     np.tile(np.broadcast_to(self.real, (channels,)), reps),
                     np.tile(np.broadcast_to(self.threshold, (channels,)), reps))
            if len(self._tiles) < 8:  # a few batch sizes; any other is tiled for its call
                self._tiles[size] = tiled
        return tiled


def int8_table(function) -> np.ndarray:
    """`function` of int8 values (an int64 array) at every int8 value: index it with x + 128."""
    return np.asarray(function(np.arange(-128, 128, dtype=np.int64))).astype(np.int8)


FEW_IN_PYTHON = 16


def clip(x: np.ndarray, lo, hi) -> np.ndarray:
    """np.clip in place. Two ufuncs on integers and on short arrays (np.clip's own checks cost ~5 µs a
    call there); np.clip itself on long float arrays, where it is the faster."""
    if x.size > 4096 and x.dtype.kind == "f":
        return np.clip(x, lo, hi, out=x)
    np.maximum(x, lo, out=x)
    return np.minimum(x, hi, out=x)


# --- exact integer matrix products ----------------------------------------------------------

class IntMatmul:
    """x @ W for integer-valued x (|x| <= max_input) and integer W, exactly.

    A float32 product is exact while every partial sum stays below 2**24: whatever order the BLAS adds
    in, a partial sum is a sum of some of the products, so |partial| <= sum |x_i w_i| <= |x| |w| (the
    Cauchy-Schwarz bound, with the largest column norm of W). Where the static bound (terms x
    max_input x max_weight) is below 2**24, every call is one float32 product. Otherwise each call
    checks the bound of its rows (one pass over x): real inputs mostly pass it (the seed CNN's
    9680-term dense layer: at most 15.1 M on 1,000 test images). Rows that miss it try the same bound
    on 2, 4 or 8 slices of the sum (one product each, added in int64); the rest are int64 sums of
    float32 chunks that each stay below 2**24 by the static bound."""

    def __init__(self, weights: np.ndarray, max_input: int = 255):
        weights = np.asarray(weights, np.int64)
        terms, max_weight = weights.shape[0], max(int(np.abs(weights).max(initial=0)), 1)
        # kept as (outputs, terms): at batch 1 the BLAS's matrix-vector product reads that layout
        # faster (the seed CNN's 9680 x 100 dense layer: 163 against 200 µs, cold cache)
        self.weights_t = np.ascontiguousarray(weights.T, np.float32)
        self.chunk = max(1, (FLOAT32_EXACT - 1) // (max_input * max_weight))
        static = terms * max_input * max_weight
        self.bound = static if static < FLOAT32_EXACT else None  # of every float32 sum it returns
        # the largest column norm, rounded up a little: the float64 sums below round too
        squares = weights.astype(np.float64) ** 2
        self.column_norm = float(np.sqrt(squares.sum(axis=0)).max(initial=0)) * (1 + 1e-9)
        # the same bound on 2, 4 or 8 slices of the sum: (slice starts, each slice's largest column norm)
        self.slices = []
        for parts in (2, 4, 8):
            if self.bound is None and terms >= 2 * parts:
                starts = np.array([part[0] for part in np.array_split(np.arange(terms), parts)])
                norms = np.sqrt(np.add.reduceat(squares, starts, axis=0)).max(axis=1) * (1 + 1e-9)
                self.slices.append((starts, norms))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Integer-valued float32 (exact) or int64 sums."""
        x = x.astype(np.float32, copy=False)
        if self.bound is not None or self._within(x):
            return x @ self.weights_t.T
        sliced = self._slices_within(x)
        if sliced is not None:  # a few slices, each one float32 product proven exact, added in int64
            ends = [*sliced[1:], self.weights_t.shape[1]]
            return sum((x[:, a:b] @ self.weights_t[:, a:b].T).astype(np.int64) for a, b in zip(sliced, ends))
        outputs, terms = self.weights_t.shape
        total = np.zeros((len(x), outputs), np.int64)
        for start in range(0, terms, self.chunk):
            total += (x[:, start:start + self.chunk] @ self.weights_t[:, start:start + self.chunk].T).astype(np.int64)
        return total

    def _slices_within(self, x: np.ndarray) -> list[int] | None:
        """The starts of the fewest slices (2, 4 or 8) whose Cauchy-Schwarz bounds all stay below 2**24
        for these rows, or None (an untrained model's dense input can miss the whole-sum bound by 3x)."""
        if not self.slices:
            return None
        squares = np.square(x, dtype=np.float64)
        for starts, norms in self.slices:
            rows = np.sqrt(np.add.reduceat(squares, starts, axis=1).max(axis=0)) * (1 + 1e-9)
            if np.all(rows * norms < FLOAT32_EXACT):
                return starts.tolist()
        return None

    def _within(self, x: np.ndarray) -> bool:
        squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        return math.sqrt(float(squares.max(initial=0))) * (1 + 1e-9) * self.column_norm < FLOAT32_EXACT


# --- padding and windows --------------------------------------------------------------------

def output_size(size: int, filter_size: int, stride: int, dilation: int, padding: int) -> tuple[int, int]:
    """(output size, padding before) for TFLite's SAME (0) and VALID (1)."""
    effective = (filter_size - 1) * dilation + 1
    if padding == 0:
        out = (size + stride - 1) // stride
    elif padding == 1:
        out = (size - effective + stride) // stride
    else:
        raise InputError(f"padding {padding} is not supported by the numpy backend")
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2


def padded(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, padding: int,
           fill=0) -> tuple[np.ndarray, int, int]:
    """(x padded with `fill` as TFLite pads, contiguous; output height; output width)."""
    n, h, w, c = x.shape
    oh, top = output_size(h, kh, sh, dh, padding)
    ow, left = output_size(w, kw, sw, dw, padding)
    need_h, need_w = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    bottom, right = max(need_h - h - top, 0), max(need_w - w - left, 0)
    if not (top or left or bottom or right):
        return np.ascontiguousarray(x), oh, ow
    out = np.full((n, h + top + bottom, w + left + right, c), fill, x.dtype)
    out[:, top:top + h, left:left + w] = x
    return out, oh, ow


def windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int, padding: int,
            fill=0) -> np.ndarray:
    """(N, OH, OW, KH, KW, C) views of x (N, H, W, C), padded with `fill` as TFLite pads. The view is
    made from strides in one call: np.pad and sliding_window_view cost 30-80 µs a call at batch 1,
    several times the copy that follows."""
    x, oh, ow = padded(x, kh, kw, sh, sw, dh, dw, padding, fill)
    sn, sy, sx, sc = x.strides
    return np.ndarray((x.shape[0], oh, ow, kh, kw, x.shape[3]), x.dtype, buffer=x,
                      strides=(sn, sy * sh, sx * sw, sy * dh, sx * dw, sc))


# --- softmax (reference_ops::Softmax for int8, gemmlowp fixed point) -------------------------

def _exp_on_interval(a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out."""
    constant_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)
    x2 = high_mul(x, x)
    x3 = high_mul(x2, x)
    x4 = high_mul(x2, x2)
    x4_over_4 = saturating_shift(x4, -2)
    poly = saturating_shift(high_mul(x4_over_4 + x3, one_third) + x2, -1)
    return constant_term + high_mul(constant_term, x + poly)


def exp_on_negative_values(a, integer_bits: int = 5):
    """gemmlowp exp_on_negative_values for Q(integer_bits).(31 - integer_bits) input, Q0.31 output."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod = (a & (quarter - 1)) - quarter
    result = _exp_on_interval(saturating_shift(a_mod, integer_bits))
    remainder = a_mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
                                 (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent:
            bit = 1 << (fractional + exponent)
            result = np.where(remainder & bit, high_mul(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x(a):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 in (a >= 0) and out, Newton-Raphson in Q2.29."""
    half_denominator = (a + INT32_MAX + 1) >> 1  # RoundingHalfSum(a, 1.0) for a sum >= 0
    x = 1515870810 + high_mul(half_denominator, -1010580540)
    one_q2 = 1 << 29
    for _ in range(3):
        x = x + saturating_shift(high_mul(x, one_q2 - high_mul(half_denominator, x)), 2)
    return saturating_shift(x, 1)


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """(input multiplier, left shift, diff_min), as SoftmaxPrepare computes them for kReference."""
    integer_bits = 5
    real = min(beta * input_scale * (1 << (31 - integer_bits)), (1 << 31) - 1.0)
    multiplier, shift = quantize_multiplier(real)
    radius = math.floor(((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << shift))
    return multiplier, shift, -radius


class SoftmaxInt8:
    """reference_ops::Softmax<int8, int8> over the last axis. exp() depends only on x - max(x), an
    integer in [-255, 0], so its fixed-point values are computed once into a 256-entry table."""

    def __init__(self, beta: float, input_scale: float):
        multiplier, left_shift, diff_min = softmax_params(beta, input_scale)
        diffs = np.arange(-255, 1, dtype=np.int64)
        exps = exp_on_negative_values(high_mul(diffs << left_shift, multiplier))
        self.exps = np.where(diffs >= diff_min, exps, 0)     # Q0.31, index diff + 255
        self.rescaled = shift_round(self.exps, 12)           # Q12.19 terms of the sum
        self.valid = diffs >= diff_min
        self.row_tables = (self.exps.tolist(), self.rescaled.tolist(), self.valid.tolist())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.size <= SCALAR_ROWS * SCALAR_ROW:  # a few short rows: Python ints beat ~30 numpy calls
            return np.array([self._row(row) for row in x.reshape(-1, x.shape[-1]).tolist()],
                            np.int8).reshape(x.shape)
        index = x.astype(np.int64) - x.max(axis=-1, keepdims=True) + 255
        exps = self.exps[index]
        sum_of_exps = np.minimum(self.rescaled[index].sum(axis=-1, keepdims=True), INT32_MAX)
        headroom = 32 - np.frexp(sum_of_exps.astype(np.float64))[1]  # count of leading zeros (uint32)
        shifted_minus_one = ((sum_of_exps << headroom) & 0xFFFFFFFF) - (1 << 31)
        scale = _one_over_one_plus_x(shifted_minus_one)
        out = shift_round(high_mul(scale, exps), 12 - headroom + 31 - 8) - 128
        return np.where(self.valid[index], np.clip(out, -128, 127), -128).astype(np.int8)

    def _row(self, row: list[int]) -> list[int]:
        """One row, the same integers as the arrays above: exps and the scale are never negative, so
        the rounding shift needs no sign term."""
        exps, rescaled, valid = self.row_tables
        top = max(row)
        index = [v - top + 255 for v in row]
        scale, headroom = reciprocal(min(sum(rescaled[i] for i in index), INT32_MAX))
        shift = 12 - headroom + 31 - 8
        mask = (1 << shift) - 1
        out = []
        for i in index:
            v = (scale * exps[i] + (1 << 30)) >> 31
            v = (v >> shift) + ((v & mask) > mask >> 1) - 128
            out.append(min(v, 127) if valid[i] else -128)
        return out


SCALAR_ROWS, SCALAR_ROW = 8, 64


def reciprocal(sum_of_exps: int) -> tuple[int, int]:
    """(1 / sum in Q0.31 after normalising, headroom) for one softmax row, in Python ints: the same
    integers as the vectorized path (a test compares them), without ~30 numpy calls on one value."""
    headroom = 32 - sum_of_exps.bit_length()
    a = ((sum_of_exps << headroom) & 0xFFFFFFFF) - (1 << 31)

    def mul(p: int, q: int) -> int:
        return (p * q + (1 << 30)) >> 31

    def times_pot(v: int, exponent: int) -> int:  # saturating_shift for exponent > 0
        limit = (1 << (31 - exponent)) - 1
        return INT32_MAX if v > limit else INT32_MIN if v < -limit else v << exponent

    half_denominator = (a + INT32_MAX + 1) >> 1
    x = 1515870810 + mul(half_denominator, -1010580540)
    for _ in range(3):
        x = x + times_pot(mul(x, (1 << 29) - mul(half_denominator, x)), 2)
    return times_pot(x, 1), headroom
