"""The architecture family beside the seed CNN: a few named presets and the parameterized space that
`edgefashion tune` searches. Every member exports to full-int8 TFLite and ONNX and runs on LiteRT,
ONNX Runtime, TFLM and the numpy backend: conv (or depthwise-separable conv) blocks, batch norm
(folded into the convolution by the converters), each block halving the image by a 2x2 max or average
pool after a full-size convolution or by a stride-2 convolution (a quarter of the MACs, no pool op: on
XNNPACK int8 the fastest per channel), then a dense head or global average pooling.

    --arch seed                       the seed's CNN, unchanged (the default)
    --arch small                      a preset
    --arch '{"blocks": [16, 32], "head": "gap"}'   any point of the space, as JSON (what tune records)
    --arch '{"blocks": [16, 32, 64], "head": "gap", "downsample": "stride"}'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from .. import IMAGE_SHAPE, NUM_CLASSES
from ..errors import InputError

WIDTHS = (8, 12, 16, 24, 32, 48, 64)
# Dense head widths. Narrow heads pay on wide flattened features (768 x 24 is 18 k weights, not 98 k at
# 128); a parameter name of its own, since Optuna needs a resumed study's choices unchanged.
DENSE = (16, 24, 32, 64, 128)


@dataclass(frozen=True)
class Arch:
    blocks: tuple = (16, 32)       # output channels of each conv block; each block halves the image
    kernel: int = 3
    separable: bool = False        # depthwise-separable convolutions after the first block
    batch_norm: bool = False
    pool: str = "max"              # max | avg
    downsample: str = "pool"       # pool (a 2x2 pool after each conv) | stride (stride-2 convs, no pool) |
    #                                mixed (the first block pooled at full resolution, the others strided)
    head: str = "dense"            # dense (Flatten -> Dense) | gap (global average pooling)
    dense: int = 64
    dropout: float = 0.0

    def validate(self) -> "Arch":
        problems = []
        if not 1 <= len(self.blocks) <= 4 or any(not isinstance(w, int) or not 1 <= w <= 256 for w in self.blocks):
            problems.append(f"blocks {list(self.blocks)}: 1-4 widths of 1-256 channels")
        if self.kernel not in (1, 3, 5, 7):
            problems.append(f"kernel {self.kernel}: 1, 3, 5 or 7")
        if self.pool not in ("max", "avg") or self.head not in ("dense", "gap"):
            problems.append(f"pool {self.pool!r} / head {self.head!r}: max|avg and dense|gap")
        if self.downsample not in ("pool", "stride", "mixed"):
            problems.append(f"downsample {self.downsample!r}: pool, stride or mixed")
        elif self.downsample == "stride" and self.pool != "max":
            problems.append(f"pool {self.pool!r} with downsample 'stride': strided blocks have no pool")
        if not 1 <= self.dense <= 1024 or not 0 <= self.dropout < 1:
            problems.append(f"dense {self.dense} / dropout {self.dropout}: 1-1024 units, dropout in [0, 1)")
        if problems:
            raise InputError("--arch: " + "; ".join(problems))
        return self

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "blocks": list(self.blocks)}


PRESETS = {
    "tiny": Arch(blocks=(8, 16), head="gap", batch_norm=True),
    "small": Arch(blocks=(16, 32), head="dense", dense=64, batch_norm=True),
    "separable": Arch(blocks=(16, 32, 64), separable=True, batch_norm=True, head="gap"),
    "wide": Arch(blocks=(32, 64), head="dense", dense=128, batch_norm=True, dropout=0.25),
}
SEED = "seed"


def parse(text: str) -> Arch | None:
    """None for the seed CNN; else a preset name or a JSON object of Arch fields."""
    text = (text or SEED).strip()
    if text == SEED:
        return None
    if text in PRESETS:
        return PRESETS[text]
    try:
        fields = json.loads(text)
    except ValueError:
        raise InputError(f"--arch {text!r}: expected {SEED}, one of {', '.join(PRESETS)}, or a JSON object of "
                         f"{', '.join(f.name for f in dataclasses.fields(Arch))}") from None
    if not isinstance(fields, dict) or set(fields) - {f.name for f in dataclasses.fields(Arch)}:
        raise InputError(f"--arch {text!r}: unknown fields; expected {', '.join(f.name for f in dataclasses.fields(Arch))}")
    if "blocks" in fields:
        fields["blocks"] = tuple(fields["blocks"]) if isinstance(fields["blocks"], list) else fields["blocks"]
    try:
        return Arch(**fields).validate()
    except TypeError as exc:
        raise InputError(f"--arch {text!r}: {exc}") from None


def build(arch: Arch, keras, image_shape: tuple = IMAGE_SHAPE, classes: int = NUM_CLASSES):
    """The Keras model of one point of the space (uncompiled) for (H, W, C) images and K classes."""
    if min(image_shape[:2]) < 2 ** len(arch.blocks):
        raise InputError(f"images of {image_shape[0]}x{image_shape[1]} are too small for {len(arch.blocks)} "
                         f"blocks (each halves them)")
    layers = keras.layers
    x = inputs = keras.Input(tuple(image_shape), name="input")
    for i, width in enumerate(arch.blocks):
        conv = layers.SeparableConv2D if arch.separable and i > 0 else layers.Conv2D
        pooled = arch.downsample == "pool" or arch.downsample == "mixed" and i == 0
        strides = 1 if pooled else 2
        x = conv(width, arch.kernel, strides=strides, padding="same", use_bias=not arch.batch_norm,
                 name=f"conv{i + 1}")(x)
        if arch.batch_norm:
            x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        if pooled:
            pool = layers.MaxPool2D if arch.pool == "max" else layers.AveragePooling2D
            x = pool(2, name=f"pool{i + 1}")(x)
    if arch.head == "gap":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(arch.dense, activation="relu", name="dense")(x)
    if arch.dropout:
        x = layers.Dropout(arch.dropout, name="dropout")(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="edge_cnn")


def sample(trial) -> Arch:
    """One point of the search space from an Optuna trial (define-by-run)."""
    depth = trial.suggest_int("depth", 1, 3)
    blocks = tuple(trial.suggest_categorical(f"width{i + 1}", WIDTHS) for i in range(depth))
    head = trial.suggest_categorical("head", ["dense", "gap"])
    downsample = trial.suggest_categorical("downsample", ["pool", "stride"])
    if downsample == "stride" and depth > 1 and trial.suggest_categorical("first_pooled", [False, True]):
        downsample = "mixed"  # a parameter of its own: studies made before it stay resumable
    return Arch(blocks=blocks, kernel=trial.suggest_categorical("kernel", [3, 5]),
                separable=trial.suggest_categorical("separable", [False, True]) if depth > 1 else False,
                batch_norm=trial.suggest_categorical("batch_norm", [False, True]), downsample=downsample,
                pool=trial.suggest_categorical("pool", ["max", "avg"]) if downsample == "pool" else "max", head=head,
                dense=trial.suggest_categorical("dense_units", DENSE) if head == "dense" else 64,
                dropout=trial.suggest_categorical("dropout", [0.0, 0.1, 0.25])).validate()


def params(arch: Arch) -> dict:
    """The Optuna parameters `sample` would draw for `arch` (to enqueue presets as starting points)."""
    out = {"depth": len(arch.blocks), **{f"width{i + 1}": w for i, w in enumerate(arch.blocks)},
           "head": arch.head, "downsample": "stride" if arch.downsample == "mixed" else arch.downsample,
           "kernel": arch.kernel, "batch_norm": arch.batch_norm, "dropout": arch.dropout}
    if arch.downsample == "pool":
        out["pool"] = arch.pool
    elif len(arch.blocks) > 1:
        out["first_pooled"] = arch.downsample == "mixed"
    if len(arch.blocks) > 1:
        out["separable"] = arch.separable
    if arch.head == "dense":
        out["dense_units"] = arch.dense
    return out


# Starting points enqueued at the start of a study: the presets and a few small models known to do well
STARTS = [*PRESETS.values(),
          Arch(blocks=(12, 24), batch_norm=True, dense=32), Arch(blocks=(16, 32), batch_norm=True, dense=32),
          Arch(blocks=(16, 32), separable=True, batch_norm=True, dense=32),
          Arch(blocks=(24, 48), separable=True, batch_norm=True, head="gap"),
          Arch(blocks=(16, 32), batch_norm=True, dense=32, downsample="stride"),
          Arch(blocks=(16, 32, 64), batch_norm=True, head="gap", downsample="stride"),
          Arch(blocks=(16, 32), batch_norm=True, dense=32, downsample="mixed"),
          Arch(blocks=(16, 48, 48), batch_norm=True, dense=24, downsample="mixed"),
          # 1/6-1/9 of the seed CNN's int8 p50 on an AVX-512 VNNI EPYC, 1/17.7 of its size, ~1 pp below it
          Arch(blocks=(16, 48, 48), batch_norm=True, dense=24, downsample="stride")]
