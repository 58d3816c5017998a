"""Classify user inputs with a bundle, a run directory or a model file (device-safe)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import check_tool_folder
from ..schemas import Prediction, PredictReport
from ..rundir import Run
from . import ood
from .images import load_inputs
from .locate import is_bundle, labels_beside, models_at
from .runtime import Model
from .trust import Trust


def predict(source, inputs, fmt: str | None = None, threads: int = 1, trust: Trust | None = None,
            backend: str = "auto", top: int = 1, save_input: Path | None = None, labels: list[str] | None = None,
            input_scale: float = 1 / 255, input_offset: float = 0.0) -> PredictReport:
    """The model's answer for every input (with the accuracy where the inputs have labels);
    `save_input` writes the images the model saw, as PNG, into that folder. Class names: `labels`,
    else the run's or bundle's, else the model's own (TFLite metadata), else class 0 ... K-1."""
    source = Path(source)
    if save_input is not None:  # before any work: a user's folder is refused, not filled
        check_tool_folder(save_input, (SAVED_INPUTS_MARKER,), "folder of saved inputs")
    with tempfile.TemporaryDirectory(prefix="edgefashion-predict-") as scratch:
        path, recorded = _model_path(source, fmt or "tflite-int8", Path(scratch), trust)
        usual = _ood_model(source, path)  # read while a bundle's extracted files are still there
        model = Model(path, threads=threads, backend=backend, labels=labels or recorded,
                      input_scale=input_scale, input_offset=input_offset)
        if fmt and model.format != fmt:  # a model file given with --format for another one
            raise InputError(f"{source}: is a {model.format} model, not the --format {fmt} asked for")
        images, truth, names = load_inputs(inputs, model.image_shape)
        if save_input is not None:
            save_images(images, names, Path(save_input))
        result = model.predict(images)
        typical = ood.load(usual, model.image_shape) if usual is not None else None
    unlike = ood.unusual(typical, images) if typical is not None else None
    if truth is not None and truth.max() >= model.num_classes:
        raise InputError(f"{inputs[0]}: label {int(truth.max())}, but the model has {model.num_classes} classes")
    names_of = model.labels
    rows = []
    for i, (name, cls, p) in enumerate(zip(names, result.class_ids, result.confidence)):
        order = np.argsort(-result.probabilities[i])[:top] if top > 1 else []
        rows.append(Prediction(input=name, class_id=int(cls), label=names_of[cls], probability=round(float(p), 4),
                               truth=None if truth is None else names_of[truth[i]],
                               top=[(names_of[j], round(float(result.probabilities[i, j]), 4)) for j in order] or None,
                               unusual=None if unlike is None else bool(unlike[i])))
    accuracy = None if truth is None else float((result.class_ids == truth).mean())
    return PredictReport(model={"source": str(source), **model.info(), "labels": names_of}, predictions=rows,
                         accuracy=accuracy)


SAVED_INPUTS_MARKER = "edgefashion-inputs.txt"  # what makes a folder predict's own


def save_images(images: np.ndarray, names: list[str], folder: Path) -> None:
    """The model's input images as PNG files, to see what it was shown, in a folder that is new,
    empty or predict's own (its marker file, the list of what it saved, says so; predict checks
    that before any work)."""
    from PIL import Image

    from ..console import printable
    from ..files import atomic_path, write_text
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / SAVED_INPUTS_MARKER, "images edgefashion predict --save-input saved, one per input:\n"
               + "".join(f"{i:04d} {printable(name)}\n" for i, name in enumerate(names)))
    for i, (image, name) in enumerate(zip(images, names)):
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in printable(name))[:80]
        size = "x".join(map(str, image.shape[:2]))
        with atomic_path(folder / f"{i:04d}-{stem}.{size}.png", suffix=".png") as tmp:
            Image.fromarray(image).save(tmp)


def _ood_model(source: Path, model: Path) -> Path | None:
    """What the training images look like (device/ood.py): from the bundle (extracted beside its
    models, checked with them), the run, or the run the model file sits in."""
    if is_bundle(source):
        found = model.parent / ood.FILE
        return found if found.is_file() else None
    folder = source if source.is_dir() else source.parent
    try:
        run = Run.at(folder)
        return run.ood_model() if run.export_manifest.is_file() else None
    except InputError:
        return None


def _model_path(source: Path, fmt: str, scratch: Path, trust: Trust | None) -> tuple[Path, list[str] | None]:
    """The model file and the class names its run or bundle recorded (None for a loose model file)."""
    found = models_at(source, scratch, trust)
    if found is None:
        if not source.exists():
            raise InputError(f"{source}: not found")
        return source, labels_beside(source)
    models, labels = found
    if fmt not in models:
        raise InputError(f"{source}: no {fmt} model (has {', '.join(models)})")
    return models[fmt], labels


