"""Learned rounding of int8 weights (AdaRound: Nagel et al. 2020, "Up or Down? Adaptive Rounding for
Post-Training Quantization"), a full-int8 repair of export's search.

Rounding each weight to its nearest int8 step is not what keeps a layer's output nearest: errors of
neighbouring weights add up on the same outputs. AdaRound chooses, weight by weight, to round up or
down so that the layer's output on calibration images stays nearest the float model's. Layer by
layer, from the input: a variable V per weight gives a soft rounding h(V) in [0, 1] (a stretched
sigmoid), the weights are s * clip(floor(W / s) + h(V), -L, L), and Adam minimises the squared
difference between the layer's output (after its ReLU) on inputs from the already rounded layers
and the float layer's output on the float inputs, plus a term that drives every h to 0 or 1 as its
exponent anneals. The chosen integers go back into the Keras model as floats exactly on the grid
(the largest weight of each channel kept, so the converter's per-channel scale is the same), and
plain post-training int8 converts them: it rounds them to themselves. L is the converter's: 127 for
TFLite, 64 for ONNX Runtime's 7-bit weights (reduce_range: s = the channel's largest |weight| / 64),
where nearest rounding costs the most.
"""

from __future__ import annotations

import numpy as np

from .equalize import _relu, chain, grid

ITERATIONS = 2000       # Adam steps per layer (the paper: 20,000; small layers settle far sooner)
BATCH = 32              # images per step
WARM_UP = 0.2           # the share of steps with reconstruction only, before the rounding term
LEARNING_RATE = 1e-2    # of V (the paper's 1e-3 with 10x the steps)
WEIGHT = 0.01           # of the rounding term (the paper's lambda)
BETA = (20.0, 2.0)      # the rounding term's exponent, annealed from the first to the second
GAMMA, ZETA = -0.1, 1.1  # the rectified sigmoid's stretch: h reaches 0 and 1 exactly
MAX_IMAGES = 1024
MAX_BYTES = 256 * 2**20  # of one layer's float inputs and outputs over the images
ROUNDED = {"Conv2D", "Dense"}


def can_round(model) -> bool:
    """A chain model with at least one Conv2D or Dense layer (channels last, not grouped)."""
    layers = chain(model)
    return layers is not None and any(_rounded(layer) for layer in layers)


def _rounded(layer) -> bool:
    config = layer.get_config()
    return (type(layer).__name__ in ROUNDED and getattr(layer, "groups", 1) == 1
            and config.get("data_format", "channels_last") == "channels_last"
            and config.get("activation", "linear") in ("linear", "relu", "softmax"))


def adaround(model, keras, tf, images: np.ndarray, seed: int, iterations: int = ITERATIONS, levels: int = 127):
    """A copy of chain `model` whose Conv2D and Dense kernels lie on the converter's int8 grid, rounded
    by AdaRound on `images`, and one row per layer (name, weights rounded the other way than to nearest,
    output error before and after); None when `model` is not such a chain."""
    from .int8_search import copy_model

    if not can_round(model):
        return None
    copy = copy_model(keras, model)
    originals, layers = chain(model), chain(copy)
    rows = []
    for i, (original, layer) in enumerate(zip(originals, layers)):
        if not _rounded(layer):
            continue
        following = layers[i + 1] if i + 1 < len(layers) else None
        relu = layer.get_config().get("activation") == "relu" or (following is not None and _relu(following))
        spread = images[np.linspace(0, len(images) - 1, _image_count(len(images), original)).astype(int)]
        x_float, x_rounded = _inputs(keras, model, original, spread), _inputs(keras, copy, layer, spread)
        rows.append(_round_layer(layer, tf, x_float, x_rounded, relu, seed + i, iterations, levels))
    return copy, rows


def _image_count(available: int, layer) -> int:
    size = int(np.prod(layer.input.shape[1:])) + int(np.prod(layer.output.shape[1:]))
    return max(BATCH, min(available, MAX_IMAGES, MAX_BYTES // (4 * 3 * size)))


def _inputs(keras, model, layer, images: np.ndarray) -> np.ndarray:
    return np.asarray(keras.Model(model.inputs, layer.input).predict(images, batch_size=256, verbose=0))


def _round_layer(layer, tf, x_float, x_rounded, relu: bool, seed: int, iterations: int, levels: int) -> dict:
    kernel, *rest = layer.get_weights()
    bias = rest[0] if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
    step = grid(kernel, levels)
    scaled = kernel / step
    floor = np.floor(scaled)
    frac = np.clip(scaled - floor, 1e-4, 1 - 1e-4)
    v = tf.Variable(-np.log((ZETA - GAMMA) / (frac - GAMMA) - 1).astype(np.float32))
    conv = type(layer).__name__ == "Conv2D"

    def output(x, weights):
        z = (tf.nn.conv2d(x, weights, strides=layer.strides, padding=layer.padding.upper(),
                          dilations=layer.dilation_rate) if conv else tf.matmul(x, weights)) + bias
        return tf.nn.relu(z) if relu else z

    def soft():
        return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def weights(h):
        return step * tf.clip_by_value(floor + h, -float(levels), float(levels))

    targets = np.concatenate([np.asarray(output(x_float[i:i + 256], kernel)) for i in range(0, len(x_float), 256)])
    m, s = tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))

    @tf.function
    def train(x, y, beta, weight, t):
        with tf.GradientTape() as tape:
            h = soft()
            error = tf.reduce_mean(tf.reduce_sum(tf.square(output(x, weights(h)) - y), axis=-1))
            loss = error + weight * tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
        g = tape.gradient(loss, v)
        m.assign(0.9 * m + 0.1 * g)
        s.assign(0.999 * s + 0.001 * g * g)
        v.assign_sub(LEARNING_RATE * (m / (1 - 0.9 ** t)) / (tf.sqrt(s / (1 - 0.999 ** t)) + 1e-8))

    rng = np.random.default_rng(seed)
    warm = int(iterations * WARM_UP)
    for t in range(1, iterations + 1):
        pick = rng.integers(0, len(x_float), BATCH)
        anneal = max(0.0, (t - warm) / max(1, iterations - warm))
        beta = BETA[0] + (BETA[1] - BETA[0]) * anneal
        train(tf.constant(x_rounded[pick]), tf.constant(targets[pick]), tf.constant(beta, tf.float32),
              tf.constant(0.0 if t <= warm else WEIGHT, tf.float32), tf.constant(float(t)))

    integers = np.clip(floor + (np.asarray(soft()) >= 0.5), -levels, levels)
    flat, largest = integers.reshape(-1, kernel.shape[-1]), np.abs(scaled).reshape(-1, kernel.shape[-1]).argmax(0)
    columns = np.arange(flat.shape[1])
    flat[largest, columns] = np.round(scaled.reshape(flat.shape)[largest, columns])  # the scale stays the channel's
    rounded = (integers * step).astype(kernel.dtype)
    layer.set_weights([rounded, *rest])

    def error(weights_) -> float:
        x = x_rounded[:256]
        return float(np.mean(np.sum(np.square(np.asarray(output(x, weights_)) - targets[:256]), axis=-1)))

    nearest = np.clip(np.round(scaled), -levels, levels)
    return {"layer": layer.name, "weights": int(integers.size),
            "rounded_other_way": int((integers != nearest).sum()),
            "error_nearest": error((nearest * step).astype(np.float32)), "error_learned": error(rounded)}
