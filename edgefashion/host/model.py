"""The seed's CNN, exactly: three 3x3 convolutions, a dense layer and a softmax."""

from __future__ import annotations

from pathlib import Path

from .. import IMAGE_SHAPE, NUM_CLASSES, data
from ..errors import InputError
from . import import_tf
from .arch import Arch
from .arch import build as build_arch

PARAMETERS = 975_030


def build_model(optimizer="adam", verbose: bool = False, arch: Arch | None = None,
                image_shape: tuple = IMAGE_SHAPE, classes: int = NUM_CLASSES):
    """The seed CNN (arch None): Conv2D(12,3) -> Conv2D(20,3) -> Conv2D(20,3) -> Flatten -> Dense(100)
    -> Dense(K, softmax) on (H, W, C) images; or a member of the architecture family (host/arch.py)."""
    import_tf(verbose)
    from tensorflow import keras
    from tensorflow.keras import layers

    if arch is not None:
        model = build_arch(arch, keras, image_shape, classes)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
        return model
    if min(image_shape[:2]) < 7:
        raise InputError(f"images of {image_shape[0]}x{image_shape[1]}: the seed CNN's three 3x3 convolutions need "
                         f"at least 7x7")
    model = keras.Sequential(
        [
            keras.Input(shape=tuple(image_shape), name="input"),
            layers.Conv2D(12, kernel_size=3, activation="relu", name="conv1"),
            layers.Conv2D(20, kernel_size=3, activation="relu", name="conv2"),
            layers.Conv2D(20, kernel_size=3, activation="relu", name="conv3"),
            layers.Flatten(name="flatten"),
            layers.Dense(100, activation="relu", name="dense"),
            layers.Dense(classes, activation="softmax", name="probabilities"),
        ],
        name="fashion_cnn",
    )
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def make_optimizer(name: str, learning_rate: float | None, momentum: float):
    """adam (the seed's) or mini-batch SGD with momentum."""
    from tensorflow import keras

    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate or 0.001)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate or 0.01, momentum=momentum)
    raise ValueError(f"optimizer {name!r}, expected 'adam' or 'sgd'")


def check_classifier(model, source: str) -> None:
    """Raise InputError unless `model` maps (N, H, W, C) images, C 1 or 3, to K >= 2 classes."""
    in_shape = tuple(model.inputs[0].shape)[1:]
    out_shape = tuple(model.outputs[0].shape)[1:]
    if len(in_shape) != 3 or None in in_shape or in_shape[2] not in (1, 3) or len(out_shape) != 1 \
            or not out_shape[0] or out_shape[0] < 2:
        raise InputError(f"{source}: model maps {in_shape} -> {out_shape}, expected an (H, W, C) -> (K,) "
                         f"image classifier")


def load_model(path, verbose: bool = False):
    """Load RUN/model.keras, refusing a missing, corrupt or wrong-shaped model with one line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model not found (run `edgefashion train --out RUN` first)")
    import_tf(verbose)
    from tensorflow import keras

    try:
        model = keras.models.load_model(path)
    except Exception as exc:  # Keras raises many types for a bad archive
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable Keras model ({first[:200]})") from None
    check_classifier(model, str(path))
    return model


def keras_reference(path, batch_size: int = 500, verbose: bool = False):
    """verify's float reference on the host: uint8 images -> Keras probabilities."""
    model = load_model(path, verbose)
    return lambda images: model.predict(data.prepare(images), batch_size=batch_size, verbose=0)
