"""The numpy backend against LiteRT's reference kernels on one-operator models TensorFlow makes here,
at input scales the committed fixtures do not have."""

import numpy as np
import pytest

from edgefashion.device.runtime import Model


def _sigmoid(low: float, high: float, int8: bool = True) -> bytes:
    """Identity dense -> sigmoid, full-integer int8 calibrated on inputs in [low, high], or float32."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, use_bias=False, kernel_initializer="identity"),
                              keras.layers.Activation("sigmoid")])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if not int8:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.uniform(low, high, (1, 256)).astype(np.float32)] for _ in range(20))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.parametrize("low, high", [(-8, 8), (-0.1, 0.3), (-30, 5), (-200, 200)])
def test_int8_logistic_equals_the_reference_kernels_at_every_input(low, high):
    content = _sigmoid(low, high)
    ours, reference = Model(content, backend="numpy", classifier=False), Model(content, kernels="reference", classifier=False)
    x = np.stack([np.roll(np.arange(-128, 128, dtype=np.int8), shift) for shift in range(256)])  # every value everywhere
    mine, theirs = ours.run(x), reference.run(x)
    assert np.array_equal(mine, theirs), f"{int((mine != theirs).sum())} of {mine.size} values differ"


def test_float_logistic_agrees_with_litert():
    content = _sigmoid(-8, 8, int8=False)
    x = np.random.default_rng(0).normal(0, 6, (64, 256)).astype(np.float32)
    ours, litert = Model(content, backend="numpy", classifier=False), Model(content, classifier=False)
    assert ours.backend == "numpy" and np.abs(ours.run(x) - litert.run(x)).max() < 1e-6
