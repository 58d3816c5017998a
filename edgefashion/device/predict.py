"""Classify user inputs with a bundle, a run directory or a model file (device-safe)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .. import LABELS
from ..errors import InputError
from ..schemas import Prediction, PredictReport
from .images import load_inputs
from .locate import models_at
from .runtime import Model
from .trust import Trust


def predict(source, inputs, fmt: str | None = None, threads: int = 1, trust: Trust | None = None,
            backend: str = "auto", top: int = 1, save_input: Path | None = None) -> PredictReport:
    """The model's answer for every input (with the accuracy where the inputs have labels);
    `save_input` writes the 28x28 images the model saw, as PNG, into that folder."""
    images, labels, names = load_inputs(inputs)
    if save_input is not None:
        save_images(images, names, Path(save_input))
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="edgefashion-predict-") as scratch:
        model = Model(_model_path(source, fmt or "tflite-int8", Path(scratch), trust), threads=threads,
                      backend=backend)
        if fmt and model.format != fmt:  # a model file given with --format for another one
            raise InputError(f"{source}: is a {model.format} model, not the --format {fmt} asked for")
        result = model.predict(images)
    rows = []
    for i, (name, cls, p) in enumerate(zip(names, result.class_ids, result.confidence)):
        order = np.argsort(-result.probabilities[i])[:top] if top > 1 else []
        rows.append(Prediction(input=name, class_id=int(cls), label=LABELS[cls], probability=round(float(p), 4),
                               truth=None if labels is None else LABELS[labels[i]],
                               top=[(LABELS[j], round(float(result.probabilities[i, j]), 4)) for j in order] or None))
    accuracy = None if labels is None else float((result.class_ids == labels).mean())
    return PredictReport(model={"source": str(source), **model.info()}, predictions=rows, accuracy=accuracy)


def save_images(images: np.ndarray, names: list[str], folder: Path) -> None:
    """The model's 28x28 inputs as PNG files, to see what it was shown."""
    from PIL import Image

    from ..console import printable
    from ..files import atomic_path
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, name) in enumerate(zip(images, names)):
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in printable(name))[:80]
        with atomic_path(folder / f"{i:04d}-{stem}.28x28.png", suffix=".png") as tmp:
            Image.fromarray(image).save(tmp)


def _model_path(source: Path, fmt: str, scratch: Path, trust: Trust | None) -> Path:
    models = models_at(source, scratch, trust)
    if models is None:
        if not source.exists():
            raise InputError(f"{source}: not found")
        return source
    if fmt not in models:
        raise InputError(f"{source}: no {fmt} model (has {', '.join(models)})")
    return models[fmt]


