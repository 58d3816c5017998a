"""Quantization-aware fine-tuning, the last full-int8 repair of export's search.

A few epochs from the trained weights with int8 simulated in the forward pass: each weighted layer
(Conv2D, DepthwiseConv2D, Dense) uses its kernel rounded to the int8 grid the converter will use
(per output channel, symmetric, 127 steps each side), and every tensor the converter quantizes per
tensor (a layer's output after its fused ReLU, a dense layer's logits before softmax, a pooled
mean) is rounded to 256 steps of its running range. Gradients pass the rounding straight through.
The loss is the float model's own probabilities (self-distillation), not the labels: the gates
judge int8 by its agreement with the float model, so the fine-tune aims at that and nothing else.

The fine-tuned weights are then converted by plain post-training int8 like any other candidate;
the float models export writes stay the original ones. Keras 3 with TensorFlow's fake-quant ops:
tensorflow-model-optimization takes tf-keras models only (measured: installing it with tf-keras
pulls the full tensorflow wheel beside tensorflow-cpu and downgrades absl-py).
"""

from __future__ import annotations

import numpy as np

from .equalize import chain
from .int8_search import copy_model

EPOCHS = 3
MAX_ROWS = 20000      # training rows fine-tuned on (a few epochs of these are enough to move the weights)
MAX_BYTES = 256 * 2**20  # and no more float32 images than this: 96x96x3 images are 110 KB each
LEARNING_RATE = 1e-4  # a tenth of adam's default: stay near the trained weights
MOMENTUM = 0.99       # of the running activation ranges
BATCH = 100

WEIGHTED = {"Conv2D", "DepthwiseConv2D", "Dense"}
SAME_SCALE = {"MaxPooling2D", "Flatten", "Reshape", "Dropout"}  # int8 in, int8 out on the input's grid
ACTIVATIONS = {"ReLU", "Activation"}                          # fused into the layer before them


def row_count(available: int, image_shape: tuple) -> int:
    """How many training rows the fine-tune takes: MAX_ROWS, fewer for large images."""
    return min(available, MAX_ROWS, max(BATCH, MAX_BYTES // (4 * int(np.prod(image_shape)))))


def fine_tune(model, keras, tf, images: np.ndarray, targets: np.ndarray, seed: int,
              epochs: int = EPOCHS, learning_rate: float = LEARNING_RATE):
    """A copy of chain `model` fine-tuned with int8 simulated, or None (not a chain, or a layer it
    cannot simulate). `targets`: the float model's probabilities on `images`."""
    if not can_fine_tune(model):
        return None
    copy = copy_model(keras, model)
    keras.utils.set_random_seed(seed)
    simulated = keras.Sequential([keras.Input(model.inputs[0].shape[1:]), *_simulated_layers(chain(copy), keras, tf)])
    simulated(images[:500], training=True)  # first running ranges, from a batch of real images
    simulated.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy")
    simulated.fit(images, targets, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)
    return copy  # its layers are the simulated model's: the weights moved with the fine-tune


def can_fine_tune(model) -> bool:
    """A chain of layers whose int8 this module can simulate."""
    layers = chain(model)
    return layers is not None and all(_kind(layer) not in WEIGHTED or _simulable(layer) for layer in layers)


def _kind(layer) -> str:
    return type(layer).__name__


def _simulable(layer) -> bool:
    config = layer.get_config()
    return (config.get("data_format", "channels_last") == "channels_last" and getattr(layer, "groups", 1) == 1
            and config.get("activation", "linear") in ("linear", "relu", "softmax"))


def _simulated_layers(layers: list, keras, tf) -> list:
    """`layers` (shared, not copied) with int8 simulated around them."""
    fake_quant, weighted = _layer_classes(keras, tf)
    out = []
    for i, layer in enumerate(layers):
        following = layers[i + 1] if i + 1 < len(layers) else None
        out.append(weighted(layer) if _kind(layer) in WEIGHTED else layer)
        softmax_inside = _kind(layer) in WEIGHTED and layer.get_config().get("activation") == "softmax"
        if not (_kind(layer) in SAME_SCALE or _kind(following) in ACTIVATIONS or softmax_inside):
            out.append(fake_quant())
    return out


def _layer_classes(keras, tf):
    """The two Keras layers of the simulation (defined here: keras is imported by the caller)."""

    class FakeQuant(keras.layers.Layer):
        """A tensor rounded to 256 steps of its running [min, max] (which always holds 0)."""

        def build(self, shape):
            self.lo = self.add_weight(shape=(), initializer="zeros", trainable=False, name="lo")
            self.hi = self.add_weight(shape=(), initializer="zeros", trainable=False, name="hi")
            self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

        def call(self, x, training=False):
            if training:
                lo, hi = tf.minimum(tf.reduce_min(x), 0.0), tf.maximum(tf.reduce_max(x), 0.0)
                keep = tf.where(self.seen > 0, MOMENTUM, 0.0)
                self.lo.assign(keep * self.lo + (1 - keep) * lo)
                self.hi.assign(keep * self.hi + (1 - keep) * hi)
                self.seen.assign(1.0)
            hi = tf.maximum(self.hi, self.lo + 1e-6)
            return tf.quantization.fake_quant_with_min_max_vars(x, tf.stop_gradient(self.lo), tf.stop_gradient(hi),
                                                                num_bits=8)

    class Int8Weights(keras.layers.Layer):
        """A Conv2D, DepthwiseConv2D or Dense layer computed with its kernel on the int8 grid."""

        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner
            self.logits = FakeQuant() if inner.get_config().get("activation") == "softmax" else None

        def call(self, x, training=False):
            inner, kind = self.inner, _kind(self.inner)
            kernel = _int8_kernel(tf, inner.kernel, depthwise=kind == "DepthwiseConv2D")
            if kind == "Dense":
                z = tf.matmul(x, kernel)
            elif kind == "Conv2D":
                z = keras.ops.conv(x, kernel, strides=inner.strides, padding=inner.padding,
                                   dilation_rate=inner.dilation_rate)
            else:
                z = keras.ops.depthwise_conv(x, kernel, strides=inner.strides, padding=inner.padding,
                                             dilation_rate=inner.dilation_rate)
            if inner.use_bias:
                z = z + inner.bias
            if self.logits is not None:
                return tf.nn.softmax(self.logits(z, training=training))
            return inner.activation(z)

    return FakeQuant, Int8Weights


def _int8_kernel(tf, kernel, depthwise: bool):
    """The kernel rounded as the converter rounds it: per output channel (the last axis; for a
    depthwise kernel each input channel x multiplier), symmetric, 127 steps each side."""
    shape = tf.shape(kernel)
    flat = tf.reshape(kernel, [-1, shape[-2] * shape[-1]]) if depthwise else tf.reshape(kernel, [-1, shape[-1]])
    reach = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=0), 1e-8))
    rounded = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -reach, reach, num_bits=8,
                                                                       narrow_range=True)
    return tf.reshape(rounded, shape)
