"""Make tests/fixtures/tile-479mb.tflite: a 1.9 KB model whose Tile op needs 479 MB per image.
The device runtime must refuse it before allocating (tests/device/test_hostile.py). Needs TensorFlow."""

import sys

import tensorflow as tf
inp = tf.keras.Input((28, 28, 1), batch_size=1)
x = tf.keras.layers.Lambda(lambda t: tf.tile(t, [1, 200, 200, 4]))(inp)   # 5600x5600x4 floats = 500 MB
x = tf.keras.layers.GlobalAveragePooling2D()(x)
out = tf.keras.layers.Dense(10, activation="softmax")(x)
m = tf.keras.Model(inp, out)
open(sys.argv[1] if len(sys.argv) > 1 else "tile-479mb.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(m).convert())
