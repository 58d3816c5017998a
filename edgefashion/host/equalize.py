"""Repairs of a float Keras model before int8 conversion (Nagel et al. 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction").

Cross-layer equalization: ReLU(s x) = s ReLU(x) for s > 0, so a convolution's output channel c can
be divided by s_c and the next layer's input weights of channel c multiplied by it without changing
the float function. Choosing s_c = sqrt(r1_c / r2_c) (r1, r2 the two weight ranges of channel c)
gives both the same range, so one per-tensor activation scale and per-channel weight scales waste
fewer of their 256 steps on one loud channel.

Bias correction: int8 weights shift each output's mean by (W_q - W) . E[x]; the shift, measured with
the float model's own activations, is taken off the bias. This one changes the float function on
purpose (by the expected int8 error), so it is applied only to the model that is quantized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PASS_THROUGH = {"MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Dropout"}
WEIGHTED = {"Conv2D", "Dense"}
PASSES = 20  # equalization sweeps; two layers of a pair settle in one, a chain of four in a few


@dataclass
class Pair:
    first: object            # the layer whose output channels are scaled down
    second: object           # the layer whose input weights of those channels are scaled up
    flatten_from: tuple | None  # (H, W, C) when a Flatten lies between them


def chain(model) -> list | None:
    """The layers of a model that is one straight chain (each layer reads the one before), else None."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if type(model).__name__ == "Sequential":
        return layers
    for before, layer in zip(layers, layers[1:]):
        source = getattr(layer.input, "_keras_history", None)
        if isinstance(layer.input, (list, tuple)) or source is None or source[0] is not before:
            return None
    return layers


def _relu(layer) -> bool:
    kind, config = type(layer).__name__, layer.get_config()
    if kind == "ReLU":
        return not config.get("max_value") and not config.get("negative_slope") and not config.get("threshold")
    return kind == "Activation" and config.get("activation") == "relu"


def _weighted(layer) -> bool:
    return (type(layer).__name__ in WEIGHTED and getattr(layer, "groups", 1) == 1
            and layer.get_config().get("data_format", "channels_last") == "channels_last")


def fold_batch_norm(model, keras):
    """A copy of a chain model with each Conv2D/Dense -> BatchNormalization folded into the
    Conv2D/Dense (what the converters do at export), so its pairs can be equalized; None when the
    model is not a chain or has no such batch norm."""
    layers = chain(model)
    if layers is None or not any(type(a).__name__ in WEIGHTED and type(b).__name__ == "BatchNormalization"
                                 for a, b in zip(layers, layers[1:])):
        return None
    rebuilt, skip = [keras.Input(model.inputs[0].shape[1:])], False
    weights = []
    for i, layer in enumerate(layers):
        if skip:
            skip = False
            continue
        following = layers[i + 1] if i + 1 < len(layers) else None
        config = layer.get_config()
        if type(layer).__name__ in WEIGHTED and type(following).__name__ == "BatchNormalization":
            config["use_bias"] = True
            weights.append(_folded(layer, following))
            skip = True
        else:
            weights.append(layer.get_weights())
        rebuilt.append(type(layer).from_config(config))
    folded = keras.Sequential(rebuilt, name=f"{model.name}_folded")
    for layer, w in zip(folded.layers, weights):
        layer.set_weights(w)
    return folded


def _folded(layer, norm) -> list[np.ndarray]:
    """Kernel and bias of `layer` followed by batch norm `norm` (inference: moving statistics)."""
    kernel, *rest = layer.get_weights()
    bias = rest[0] if rest else np.zeros(kernel.shape[-1], kernel.dtype)
    config = norm.get_config()
    values = dict(zip([w.path.rsplit("/", 1)[-1] for w in norm.weights], norm.get_weights()))
    gamma = values.get("gamma", np.ones_like(bias)) if config.get("scale", True) else np.ones_like(bias)
    beta = values.get("beta", np.zeros_like(bias)) if config.get("center", True) else np.zeros_like(bias)
    factor = gamma / np.sqrt(values["moving_variance"] + config["epsilon"])
    return [kernel * factor, (bias - values["moving_mean"]) * factor + beta]


def pairs(model) -> list[Pair]:
    """Conv/Dense layers with a ReLU (or no activation) whose output goes, through pooling, dropout,
    flatten or a ReLU only, into the next Conv/Dense layer."""
    layers = chain(model) or []
    found = []
    for i, first in enumerate(layers):
        if not _weighted(first) or first.get_config()["activation"] not in ("relu", "linear"):
            continue
        flatten_from = None
        for layer in layers[i + 1:]:
            kind = type(layer).__name__
            if kind == "Flatten":
                flatten_from = tuple(layer.input.shape[1:])
            if _weighted(layer):
                found.append(Pair(first, layer, flatten_from))
            if not (kind in PASS_THROUGH or _relu(layer)):
                break
    return found


def _input_slices(pair: Pair, kernel: np.ndarray) -> np.ndarray:
    """A view of the second layer's kernel as (channel of the first layer, ...)."""
    if type(pair.second).__name__ == "Conv2D":
        return np.moveaxis(kernel, 2, 0)                      # (kh, kw, cin, cout) -> (cin, kh, kw, cout)
    if pair.flatten_from:
        channels = pair.flatten_from[-1]
        return np.moveaxis(kernel.reshape(-1, channels, kernel.shape[-1]), 1, 0)  # NHWC flatten order
    return kernel                                              # (in, out)


def equalize(model) -> list[dict]:
    """Cross-layer equalization of every pair of `model`, in place; one row per pair (its ranges)."""
    found = pairs(model)
    before = {id(p): _ranges(p) for p in found}
    for _ in range(PASSES):
        worst = 0.0
        for pair in found:
            r1, r2 = _ranges(pair)
            scale = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1)), 1.0)
            _apply(pair, scale)
            worst = max(worst, float(np.abs(np.log(scale)).max()))
        if worst < 1e-3:
            break
    return [{"layers": f"{p.first.name} -> {p.second.name}",
             "range_ratio_before": _spread(before[id(p)][0]), "range_ratio_after": _spread(_ranges(p)[0])}
            for p in found]


def _spread(ranges: np.ndarray) -> float:
    """Largest over smallest non-zero channel range: 1 is balanced."""
    live = ranges[ranges > 0]
    return round(float(live.max() / live.min()), 1) if len(live) else 1.0


def _ranges(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    k1 = pair.first.get_weights()[0]
    k2 = pair.second.get_weights()[0]
    r1 = np.abs(k1).reshape(-1, k1.shape[-1]).max(0)
    slices = _input_slices(pair, k2)
    r2 = np.abs(slices).reshape(slices.shape[0], -1).max(1)
    return r1, r2


def _apply(pair: Pair, scale: np.ndarray) -> None:
    first = pair.first.get_weights()
    first[0] = first[0] / scale
    if len(first) > 1:
        first[1] = first[1] / scale
    pair.first.set_weights(first)
    second = pair.second.get_weights()
    kernel = second[0].copy()
    slices = _input_slices(pair, kernel)  # a view: scaling it scales the kernel
    slices *= scale.reshape(-1, *([1] * (slices.ndim - 1)))
    second[0] = kernel
    pair.second.set_weights(second)


def equalize_activations(model, keras, images: np.ndarray) -> list[dict]:
    """Move activation outliers into the next layer's weights, in place (the SmoothQuant rule with
    alpha 1/2: channel c of the first layer divided by s_c = sqrt(a_c / r2_c), a_c its largest
    output on `images`, r2_c the next layer's weight range for it). Same float function; a channel
    the next layer ignores (r2_c = 0) is brought down to the quietest live channel's range."""
    found = pairs(model)
    if not found:
        return []
    outputs = keras.Model(model.inputs, [p.first.output for p in found]).predict(images, batch_size=500, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    rows = []
    for pair, out in zip(found, outputs):
        a = np.maximum(np.asarray(out).reshape(-1, out.shape[-1]).max(0), 0)
        _, r2 = _ranges(pair)
        live = (a > 0) & (r2 > 0)
        if not live.any():
            continue
        scale = np.ones_like(a)
        scale[live] = np.sqrt(a[live] / r2[live])
        quietest = float((a[live] / scale[live]).min())
        dead = (a > 0) & (r2 == 0)
        scale[dead] = a[dead] / quietest
        _apply(pair, scale.astype(np.float32))
        rows.append({"layers": f"{pair.first.name} -> {pair.second.name}", "range_ratio_before": _spread(a),
                     "range_ratio_after": _spread(a / scale)})
    return rows


def grid(kernel: np.ndarray, levels: int = 127) -> np.ndarray:
    """The converter's symmetric int8 step per output channel (the last axis), Dense kernels included
    (measured on TensorFlow 2.21: one scale per output of a FULLY_CONNECTED kernel): the channel's
    largest |weight| over `levels` (127; ONNX Runtime's 7-bit reduce_range weights: 64)."""
    reach = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0)
    return np.where(reach > 0, reach / levels, 1.0).astype(np.float32)


def _fake_int8(kernel: np.ndarray) -> np.ndarray:
    """Symmetric int8 weights as the TFLite converter makes them."""
    step = grid(kernel)
    return np.clip(np.round(kernel / step), -127, 127) * step


def correct_bias(model, keras, images: np.ndarray) -> list[str]:
    """Take the mean shift of int8 weights off each Conv2D/Dense bias, in place; the layers corrected."""
    layers = chain(model)
    if layers is None:
        return []
    corrected = []
    for layer in layers:
        if not _weighted(layer) or not layer.use_bias:
            continue
        kernel, bias = layer.get_weights()[:2]
        conv = type(layer).__name__ == "Conv2D"
        error = _fake_int8(kernel) - kernel
        feed = keras.Model(model.inputs, layer.input)
        mean_input = np.asarray(feed.predict(images, batch_size=500, verbose=0)).mean(0)
        if conv:
            shift = np.asarray(keras.ops.conv(mean_input[None], error, strides=layer.strides,
                                              padding=layer.padding, dilation_rate=layer.dilation_rate))
            shift = shift.reshape(-1, kernel.shape[-1]).mean(0)
        else:
            shift = mean_input @ error
        layer.set_weights([kernel, bias - shift.astype(bias.dtype), *layer.get_weights()[2:]])
        corrected.append(layer.name)
    return corrected
