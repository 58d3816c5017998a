#!/usr/bin/env python3
"""Make tests/fixtures/foreign/: small models that edgefashion did not train, of other shapes.

  rgb32_5_int8.tflite     a 32x32x3 -> 5-class CNN, full-integer int8 (random weights, calibrated on
                          seeded random images, as one quantizes a model without its data)
  autoencoder_int8.tflite a 64 -> 16 -> 64 dense autoencoder, full-integer int8: not a classifier
  two_io_int8.tflite      two inputs (16,) and (8,), two outputs (4,) and (2,), full-integer int8: a model
                          of several inputs and outputs
  nchw_f32.onnx           a PyTorch-style NCHW (N, 1, 28, 28) -> 10 float model, built with onnx.helper
  nchw_dynamic_f32.onnx   the same graph with height and width left open: (N, 1, H, W) -> 10
  malformed_rows_f32.onnx declares (N, 10) probabilities for (N, 1, 28, 28) images but gives 2N rows: answers
                          that would pair with the wrong images, which every command must refuse
  digits-bundle.tar.gz    a bundle of the seed CNN trained on scikit-learn's 8x8 digits (`edgefashion run`
                          with its held-out split, 12 epochs, 50 golden images): the device tier's
                          non-Fashion run

Needs the host extra.   python tools/make_foreign_models.py [--out tests/fixtures/foreign]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgefashion.files import write_bytes  # noqa: E402
from edgefashion.rundir import Run  # noqa: E402
from edgefashion.host import import_tf  # noqa: E402
from edgefashion.host.export import tflite_converter  # noqa: E402


def rgb_classifier(keras):
    layers = keras.layers
    return keras.Sequential([keras.Input((32, 32, 3), name="image"),
                             layers.Conv2D(8, 3, strides=2, activation="relu"),
                             layers.DepthwiseConv2D(3, padding="same", activation="relu"),
                             layers.Conv2D(16, 1, activation="relu"),
                             layers.GlobalAveragePooling2D(),
                             layers.Dense(5, activation="softmax")], name="rgb32_5")


def autoencoder(keras):
    layers = keras.layers
    return keras.Sequential([keras.Input((64,), name="signal"), layers.Dense(16, activation="relu"),
                             layers.Dense(64, activation="sigmoid")], name="autoencoder")


def two_in_two_out(keras):
    layers = keras.layers
    a, b = keras.Input((16,), name="signal"), keras.Input((8,), name="context")
    joined = layers.Dense(12, activation="relu")(layers.Concatenate()([a, b]))
    return keras.Model([a, b], [layers.Dense(4, name="scores")(joined), layers.Dense(2, name="flags")(joined)],
                       name="two_io")


def nchw_onnx(height="28", width="28") -> bytes:
    """Conv(4, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(10) -> Softmax, NCHW as PyTorch exports."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), "conv_w"),
               numpy_helper.from_array(np.zeros(4, np.float32), "conv_b"),
               numpy_helper.from_array(rng.normal(0, 0.5, (4, 10)).astype(np.float32), "fc_w"),
               numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["l"]),
             helper.make_node("Softmax", ["l"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "nchw_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                 ["N", 1, *map(_dim, (height, width))])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def malformed_rows_onnx() -> bytes:
    """Flatten -> the first 20 features -> Reshape [-1, 10] -> Softmax: 2N rows of 10 for N images."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("starts", [0]), ("ends", [20]), ("axes", [1]), ("shape", [-1, 10]))]
    nodes = [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("Slice", ["f", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["r"]), helper.make_node("Softmax", ["r"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "malformed_rows", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                       ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _dim(d: str):
    return int(d) if d.isdigit() else d  # a number is fixed, a name is left open


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "foreign")
    args = parser.parse_args(argv)
    tf = import_tf()
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    for name, model, calibration in (
            ("rgb32_5_int8.tflite", rgb_classifier(tf.keras), rng.random((100, 32, 32, 3), dtype=np.float32)),
            ("autoencoder_int8.tflite", autoencoder(tf.keras), rng.random((100, 64), dtype=np.float32))):
        write_bytes(args.out / name, bytes(tflite_converter(tf, model, calibration).convert()))
        print(f"wrote {args.out / name}")
    two = tflite_converter(tf, two_in_two_out(tf.keras), None)
    two.optimizations = [tf.lite.Optimize.DEFAULT]
    two.representative_dataset = lambda: ({"signal": rng.random((1, 16), dtype=np.float32),
                                           "context": rng.random((1, 8), dtype=np.float32)} for _ in range(50))
    two.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    two.inference_input_type = two.inference_output_type = tf.int8
    write_bytes(args.out / "two_io_int8.tflite", bytes(two.convert()))
    print(f"wrote {args.out / 'two_io_int8.tflite'}")
    for name, dims in (("nchw_f32.onnx", ("28", "28")), ("nchw_dynamic_f32.onnx", ("H", "W"))):
        write_bytes(args.out / name, nchw_onnx(*dims))
        print(f"wrote {args.out / name}")
    write_bytes(args.out / "malformed_rows_f32.onnx", malformed_rows_onnx())
    print(f"wrote {args.out / 'malformed_rows_f32.onnx'}")
    write_bytes(args.out / "digits-bundle.tar.gz", digits_bundle())
    print(f"wrote {args.out / 'digits-bundle.tar.gz'}")
    return 0


def digits_bundle() -> bytes:
    """The bundle of a digits run, made by the command line as a user makes it."""
    import subprocess
    import tempfile

    import digits_to_csv

    with tempfile.TemporaryDirectory() as scratch:
        csv = digits_to_csv.write(Path(scratch) / "digits")
        run = Path(scratch) / "run"
        subprocess.run([sys.executable, "-m", "edgefashion", "run", "--data", str(csv), "--out", str(run),
                        "--epochs", "12", "--golden", "50"], check=True, capture_output=True)
        return Run(run).bundle.read_bytes()


if __name__ == "__main__":
    sys.exit(main())
