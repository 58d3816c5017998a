"""Workstation side: training and export. Everything here needs TensorFlow (the `host` extra)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from ..errors import MissingDependency


def import_tf(verbose: bool = False):
    """Import TensorFlow quietly (its start-up log is noise unless asked for)."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    try:
        with contextlib.nullcontext() if verbose else _stderr_silenced():
            import tensorflow as tf
    except ImportError:
        raise MissingDependency("TensorFlow", "host") from None
    if not verbose:
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


def versions() -> dict:
    """Versions of the host stack, for config.json and export.json."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for dist in ("edgefashion", "numpy", "tensorflow-cpu", "tensorflow", "keras", "tf2onnx",
                 "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    if "tensorflow-cpu" in out:
        out["tensorflow"] = out.pop("tensorflow-cpu")
    return out


@contextlib.contextmanager
def _stderr_silenced():
    """Send fd 2 to /dev/null: TensorFlow's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
