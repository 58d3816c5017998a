"""Classify user inputs with a bundle, a run directory or a model file (device-safe)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .. import LABELS
from ..errors import InputError
from .images import load_inputs
from .locate import models_at
from .runtime import Model
from .trust import Trust


def predict(source, inputs, fmt: str = "tflite-int8", threads: int = 1, trust: Trust | None = None,
            backend: str = "auto") -> dict:
    """{"model": info, "predictions": [{input, label, probability[, truth]}], "accuracy": float|None}"""
    images, labels, names = load_inputs(inputs)
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="edgefashion-predict-") as scratch:
        model = Model(_model_path(source, fmt, Path(scratch), trust), threads=threads, backend=backend)
        result = model.predict(images)
    rows = []
    for i, (name, cls, p) in enumerate(zip(names, result.class_ids, result.confidence)):
        row = {"input": name, "class": int(cls), "label": LABELS[cls], "probability": round(float(p), 4)}
        if labels is not None:
            row["truth"] = LABELS[labels[i]]
        rows.append(row)
    accuracy = None if labels is None else float((result.class_ids == labels).mean())
    return {"model": {"source": str(source), **model.info()}, "predictions": rows, "accuracy": accuracy}


def _model_path(source: Path, fmt: str, scratch: Path, trust: Trust | None) -> Path:
    models = models_at(source, scratch, trust)
    if models is None:
        if not source.exists():
            raise InputError(f"{source}: not found")
        return source
    if fmt not in models:
        raise InputError(f"{source}: no {fmt} model (has {', '.join(models)})")
    return models[fmt]


