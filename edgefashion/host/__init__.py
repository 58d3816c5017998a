"""Workstation side: training and export. Everything here needs TensorFlow (the `host` extra)."""

from __future__ import annotations

import logging
import os
import platform

from .. import package_versions
from ..console import quiet
from ..errors import MissingDependency


def import_tf(verbose: bool = False):
    """Import TensorFlow quietly (its start-up log is noise unless asked for)."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    try:
        with quiet(verbose):
            import tensorflow as tf
    except ImportError:
        raise MissingDependency("TensorFlow", "host") from None
    if not verbose:
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


def versions() -> dict:
    """Versions of the host stack, for config.json and export.json."""
    found = package_versions(("edgefashion", "numpy", "tensorflow-cpu", "tensorflow", "keras", "tf2onnx",
                              "onnx", "onnxruntime", "ai-edge-litert"))
    out = {"python": platform.python_version(), **{k: v for k, v in found.items() if v}}
    if "tensorflow-cpu" in out:
        out["tensorflow"] = out.pop("tensorflow-cpu")
    return out
