#!/usr/bin/env python3
"""Make tests/fixtures/ops/: a small edge CNN that uses every operator of the numpy backend.

Conv2D (stride 2, SAME, ReLU6) -> DepthwiseConv2D (multiplier 2, SAME) -> MaxPool2D -> Conv2D 1x1
-> a residual Add -> AveragePooling2D (SAME, odd size: partial windows) -> DepthwiseConv2D (VALID,
stride 2) -> GlobalAveragePooling2D (MEAN) -> Dense -> Softmax, trained one epoch on 6,000 real
training images, converted to TFLite three ways:

  model_ops_int8.tflite           full-integer int8, int8 input and output (as edgefashion exports)
  model_ops_int8_float_io.tflite  int8 inside, float input and output (QUANTIZE / DEQUANTIZE ops)
  model_ops_f32.tflite            float32

Needs the host extra.   python tools/make_ops_models.py [--out tests/fixtures/ops]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion import IMAGE_SHAPE, NUM_CLASSES, data  # noqa: E402
from edgefashion.files import write_bytes  # noqa: E402
from edgefashion.host import import_tf  # noqa: E402
from edgefashion.host.export import tflite_converter  # noqa: E402
from make_test_fixtures import fit_briefly  # noqa: E402  (tools/ is this script's folder)


def ops_model(keras):
    layers = keras.layers
    x = inputs = keras.Input(IMAGE_SHAPE, name="input")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6", name="conv_s2")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu", name="dw")(x)
    x = layers.MaxPool2D(2, name="maxpool")(x)
    y = layers.Conv2D(16, 1, activation="relu", name="pointwise")(x)
    x = layers.Add(name="residual")([x, y])
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="avgpool")(x)
    x = layers.DepthwiseConv2D(2, strides=2, padding="valid", name="dw_valid")(x)
    x = layers.GlobalAveragePooling2D(name="mean")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="ops_cnn")


def convert(tf, model, calibration, int8: bool, float_io: bool = False) -> bytes:
    """edgefashion's own converter settings; float_io keeps float input and output around the int8 graph."""
    converter = tflite_converter(tf, model, calibration if int8 else None)
    if float_io:
        converter.inference_input_type = converter.inference_output_type = tf.float32
    return converter.convert()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ops")
    args = parser.parse_args(argv)
    tf = import_tf()
    keras = tf.keras
    keras.utils.set_random_seed(0)
    model = ops_model(keras)
    train = fit_briefly(keras, model)
    calibration = data.prepare(train.images[:200])
    for name, int8, float_io in (("model_ops_int8.tflite", True, False), ("model_ops_int8_float_io.tflite", True, True),
                                 ("model_ops_f32.tflite", False, False)):
        write_bytes(args.out / name, convert(tf, model, calibration, int8, float_io))
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
